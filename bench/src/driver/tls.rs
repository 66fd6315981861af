//! `wss://` connections: a rustls session per connection between the socket and the
//! WebSocket bytes. The upgrade request is written into the session as soon as TCP is
//! up; rustls holds it until its handshake is done, so the connect phase times TCP, TLS
//! and the upgrade together.
//!
//! Memory: a session is boxed beside the connection (8 bytes per slot, only in runs with
//! a `wss://` target; `Conn` stays as it is), holds at most
//! [`crate::tls::SESSION_BUFFER_LIMIT`] waiting for the socket, and what does not fit
//! waits in the connection's own output queue, as it does without TLS. rustls keeps a
//! 4 KiB read buffer per session of its own (its fixed read size).

use std::io::{self, Read as _, Write as _};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection};

use super::Driver;
use crate::cause::Cause;
use crate::config::Plan;
use crate::tls::{self, TlsError, SESSION_BUFFER_LIMIT};

/// The sessions of one driver thread's connections.
#[derive(Default)]
pub(super) struct Sessions {
    /// None when no target is `wss://`.
    config: Option<Arc<ClientConfig>>,
    /// Per target: the name its certificate must carry; None for `ws://` targets.
    names: Vec<Option<ServerName<'static>>>,
    by_slot: Vec<Option<Box<ClientConnection>>>,
}

impl Sessions {
    /// What the plan's `wss://` targets need (nothing when there are none).
    ///
    /// # Errors
    /// The CA file or the server names fail now (the coordinator checked them at start).
    pub(super) fn new(plan: &Plan) -> Result<Self, TlsError> {
        if !plan.targets.iter().any(|t| t.tls) {
            return Ok(Sessions::default());
        }
        let names = plan
            .targets
            .iter()
            .map(|t| t.tls.then(|| tls::server_name(&t.url, &t.server_name)).transpose())
            .collect::<Result<_, _>>()?;
        Ok(Sessions { config: Some(tls::client_config(&plan.tls)?), names, by_slot: Vec::new() })
    }

    /// Whether `slot` talks through a session.
    pub(super) fn active(&self, slot: u32) -> bool {
        self.by_slot.get(slot as usize).is_some_and(Option::is_some)
    }

    /// Ends `slot`'s session, if it has one.
    pub(super) fn end(&mut self, slot: u32) {
        if let Some(session) = self.by_slot.get_mut(slot as usize) {
            *session = None;
        }
    }

    fn get(&mut self, slot: u32) -> Option<&mut ClientConnection> {
        self.by_slot.get_mut(slot as usize)?.as_deref_mut()
    }
}

impl Driver {
    /// Starts a session for `slot` if its target is `wss://`; false when it could not.
    pub(super) fn start_tls(&mut self, slot: u32, target: usize) -> bool {
        let (Some(config), Some(Some(name))) = (&self.sessions.config, self.sessions.names.get(target)) else {
            return true;
        };
        match ClientConnection::new(config.clone(), name.clone()) {
            Ok(mut session) => {
                session.set_buffer_limit(Some(SESSION_BUFFER_LIMIT));
                let by_slot = &mut self.sessions.by_slot;
                if by_slot.len() <= slot as usize {
                    by_slot.resize_with(slot as usize + 1, || None);
                }
                by_slot[slot as usize] = Some(Box::new(session));
                true
            }
            Err(e) => {
                let detail = format!("{}: TLS: {e}", self.describe(slot));
                self.fail(slot, Cause::tls(&e), detail);
                false
            }
        }
    }

    /// Writes `bytes` through `slot`'s session: into it as far as its limit allows, the
    /// rest queued after it; then as much as the socket takes.
    pub(super) fn tls_send(&mut self, slot: u32, bytes: &[u8]) -> bool {
        let conn = &mut self.conns[slot as usize];
        if !conn.out.is_empty() {
            conn.out.extend_from_slice(bytes);
            return true;
        }
        let Some(session) = self.sessions.get(slot) else {
            return false;
        };
        // A session's writer only buffers: it cannot fail, it can only take less.
        let taken = session.writer().write(bytes).unwrap_or(0);
        if taken < bytes.len() {
            conn.out.extend_from_slice(&bytes[taken..]);
        }
        self.tls_flush(slot)
    }

    /// Writes what the session holds and then what waits behind it, until the socket
    /// would block; false when the connection failed.
    pub(super) fn tls_flush(&mut self, slot: u32) -> bool {
        let conn = &mut self.conns[slot as usize];
        let (Some(stream), Some(session)) = (conn.stream.as_mut(), self.sessions.get(slot)) else {
            return false;
        };
        match pump(session, stream, &mut conn.out) {
            Ok(wrote) => {
                if wrote {
                    // Closed loop: a sender that held back while its output was full may go on.
                    self.windows.drained(slot);
                }
                true
            }
            Err(e) => {
                let detail = format!("write to {}: {e}", self.describe(slot));
                self.fail(slot, Cause::kernel(&e), detail);
                false
            }
        }
    }

    /// Reads records until the socket would block, handing the plaintext on as the
    /// socket's bytes are handed on without TLS.
    pub(super) fn tls_read(&mut self, slot: u32) {
        let mut rbuf = std::mem::take(&mut self.rbuf);
        while let (Some(stream), Some(session)) = (self.conns[slot as usize].stream.as_mut(), self.sessions.get(slot)) {
            match session.read_tls(stream) {
                Ok(0) => {
                    let state = self.conns[slot as usize].state;
                    let detail = format!("{} closed the TCP connection ({state:?})", self.describe(slot));
                    self.fail(slot, Cause::node_eof(), detail);
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let detail = format!("read from {}: {e}", self.describe(slot));
                    self.fail(slot, Cause::kernel(&e), detail);
                    break;
                }
            }
            if !self.tls_take_records(slot, &mut rbuf) {
                break;
            }
        }
        self.rbuf = rbuf;
    }

    /// Decrypts what was read and passes the plaintext on; sends what the session has to
    /// say back (handshake, alerts). False when the connection is over.
    fn tls_take_records(&mut self, slot: u32, rbuf: &mut [u8]) -> bool {
        let Some(session) = self.sessions.get(slot) else {
            return false;
        };
        let closed = match session.process_new_packets() {
            Ok(state) => state.peer_has_closed(),
            Err(e) => {
                // Tell the server why (an alert), then close.
                if let (Some(stream), Some(session)) =
                    (self.conns[slot as usize].stream.as_mut(), self.sessions.get(slot))
                {
                    let _ = session.write_tls(stream);
                }
                let detail = format!("{}: TLS: {e}{}", self.describe(slot), certificate_hint(&e));
                self.fail(slot, Cause::tls(&e), detail);
                return false;
            }
        };
        loop {
            let Some(session) = self.sessions.get(slot) else {
                return false;
            };
            match session.reader().read(rbuf) {
                Ok(0) => break,
                Ok(n) => self.take_input(slot, &rbuf[..n]),
                // WouldBlock: no more plaintext for now; UnexpectedEof: the socket's EOF
                // says the rest.
                Err(_) => break,
            }
        }
        if !self.tls_flush(slot) {
            return false;
        }
        if closed {
            let detail = format!("{} ended TLS (close_notify)", self.describe(slot));
            self.fail(slot, Cause::node_eof(), detail);
            return false;
        }
        true
    }
}

/// Moves bytes session -> socket, refilling the session from `out`, until the socket
/// would block or nothing is left; whether anything was written.
fn pump(session: &mut ClientConnection, stream: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<bool> {
    let mut wrote = false;
    loop {
        while session.wants_write() {
            match session.write_tls(stream) {
                Ok(0) => return Ok(wrote),
                Ok(_) => wrote = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Ok(wrote);
        }
        let taken = session.writer().write(out).unwrap_or(0);
        if taken == 0 {
            return Ok(wrote);
        }
        if taken == out.len() {
            // Free the buffer: idle connections own no heap.
            *out = Vec::new();
        } else {
            out.drain(..taken);
        }
    }
}

/// What to do about a certificate the load generator refused.
fn certificate_hint(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(_) => " (a self-signed certificate needs --ca FILE, or --insecure)",
        _ => "",
    }
}
