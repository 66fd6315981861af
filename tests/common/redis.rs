//! Real redis-server processes on free ports, for the cluster tests.
//! A test that needs Redis fails (never skips) when redis-server is missing.
