"""Deployment files: compose topology, nginx config, sysctl.conf, the scripts, and a real
cluster (redis-server + switchboard nodes + nginx) driven end to end by Python clients.

Run from the repository root: python3 -m pytest -q tests/deploy
Needs nginx and redis-server installed (the tests fail, never skip, without them), and a
switchboard binary: SWITCHBOARD_BIN, else the newer of target/release and target/debug,
else one built with `cargo build --release -p switchboard`.
"""

import asyncio
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import websockets
import yaml

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
MY_SCRIPTS = ["tune-kernel.sh", "cluster.sh", "flamegraph.sh", "capacity.sh"]

LOGIN = '{{"MessageType":"loginmsg","Sender":"{}"}}'
CHAT = '{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":"alice"}'
# What the recipient must get, byte for byte: the seed's field order and trailing newline.
DELIVERED = '{"MessageType":"chatmsg","Data":"hi","Reciever":"bob","Sender":"alice"}\n'

# Keys sysctl.conf must set (DESIGN.md: a million connections on one host).
REQUIRED_SYSCTLS = {
    "fs.file-max",
    "fs.nr_open",
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_mem",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "net.core.netdev_max_backlog",
    "net.netfilter.nf_conntrack_max",
}


# ---------------------------------------------------------------- helpers


def _usable(binary: Path) -> bool:
    """A real node binary (not a stale skeleton): its --help names --reuse-port."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        return False
    try:
        out = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--reuse-port" in out.stdout


@pytest.fixture(scope="session")
def switchboard_bin() -> str:
    if os.environ.get("SWITCHBOARD_BIN"):
        return os.environ["SWITCHBOARD_BIN"]
    candidates = [ROOT / "target" / p / "switchboard" for p in ("release", "debug")]
    usable = [c for c in candidates if _usable(c)]
    if not usable:
        subprocess.run(
            ["cargo", "build", "--release", "-p", "switchboard"], cwd=ROOT, check=True
        )
        usable = [candidates[0]]
    return str(max(usable, key=lambda c: c.stat().st_mtime))


def free_ports(count: int) -> list[int]:
    """`count` consecutive free TCP ports on loopback (cluster.sh numbers nodes from a base)."""
    # Outgoing connections take their ports from the ephemeral range and leave
    # them in TIME-WAIT, where they block a listener's bind: look below it first.
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    below = range(max(1100, low - 8000) + os.getpid() % 3000, low - count, 7)
    for base in [*below, *range(21000 + os.getpid() % 5000, 60000, 7)]:
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                # As the servers themselves bind (redis, nginx and switchboard all
                # set SO_REUSEADDR): a port whose old connections linger in
                # TIME-WAIT is free for them, and would not be without this.
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return list(range(base, base + count))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


def metric(admin: str, name: str) -> int:
    """A gauge from the /metrics of a node's admin listener (HOST:PORT)."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=2) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError(f"{name} not in /metrics of {admin}")


def wait_for(predicate, what: str, timeout: float = 5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def pid_alive(pid: int) -> bool:
    """Running, not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class Cluster:
    """scripts/cluster.sh in a private run dir, on free ports."""

    def __init__(self, tmp: Path, bin_path: str):
        ports = free_ports(10)
        node_base, self.lb_port, self.redis_port = ports[0], ports[8], ports[9]
        self.node_ports = ports[:8]
        self.dir = tmp / "cluster"
        self.env = dict(
            os.environ,
            CLUSTER_DIR=str(self.dir),
            CLUSTER_PORT=str(self.lb_port),
            CLUSTER_NODE_PORT=str(node_base),
            CLUSTER_REDIS_PORT=str(self.redis_port),
            SWITCHBOARD_BIN=bin_path,
            RUST_LOG="info",
        )

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(SCRIPTS / "cluster.sh"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and result.returncode != 0:
            logs = "".join(
                f"\n--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted(self.dir.glob("*.log"))
            )
            raise AssertionError(
                f"cluster.sh {' '.join(args)} exited {result.returncode}\n"
                f"{result.stdout}{result.stderr}{logs}"
            )
        return result

    def pids(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in self.dir.glob("*.pid")}

    def admins(self, nodes: int) -> list[str]:
        """The admin listeners of nodes 1..nodes, as each printed it on stdout (its log)."""
        found = []
        for i in range(1, nodes + 1):
            log = (self.dir / f"node-{i}.log").read_text()
            found += [l.split()[-1] for l in log.splitlines() if l.startswith("switchboard admin on ")]
        assert len(found) == nodes, f"admin lines of {nodes} nodes: {found}"
        return found


@pytest.fixture
def cluster(tmp_path, switchboard_bin):
    c = Cluster(tmp_path, switchboard_bin)
    yield c
    c.run("down", check=False)


async def recv_json_text(ws, timeout=3.0) -> str:
    return await asyncio.wait_for(ws.recv(), timeout)


async def assert_silent(ws, seconds=0.3):
    """Nothing more arrives (exactly-once delivery)."""
    try:
        extra = await asyncio.wait_for(ws.recv(), seconds)
    except asyncio.TimeoutError:
        return
    raise AssertionError(f"unexpected extra message: {extra!r}")


# ---------------------------------------------------------------- static checks


def test_nginx_and_redis_are_installed():
    # The cluster tests need both; a missing one is a failure, never a skip.
    for tool in ("nginx", "redis-server", "redis-cli", "curl"):
        assert shutil.which(tool), f"{tool} is not installed (apt-get install nginx-light redis-server curl)"


def test_compose_topology():
    compose = yaml.safe_load((ROOT / "docker-compose.yaml").read_text())
    services = compose["services"]

    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    assert "--save" in redis["command"] and "--appendonly" in redis["command"]

    nodes = {
        name: s
        for name, s in services.items()
        if isinstance(s.get("build"), dict) and s["build"].get("dockerfile") == "deploy/Dockerfile"
    }
    assert len(nodes) >= 2, "at least two node services built from deploy/Dockerfile"
    node_ids = set()
    for name, node in nodes.items():
        command = node["command"]
        assert command[command.index("--redis") + 1] == "redis://redis:6379", name
        node_ids.add(command[command.index("--node-id") + 1])
        assert "redis" in node["depends_on"], name
        nofile = node["ulimits"]["nofile"]
        assert nofile["soft"] >= 100_000 and nofile["hard"] >= nofile["soft"], name
        assert "9000" in [str(p) for p in node["expose"]], name
        assert int(node["sysctls"]["net.core.somaxconn"]) >= 4096, name
    assert len(node_ids) == len(nodes), "every node has its own --node-id"

    nginx = services["nginx"]
    assert nginx["image"].startswith("nginx")
    assert "8080:8080" in nginx["ports"]
    assert any(v.startswith("./deploy/nginx.conf:/etc/nginx/nginx.conf") for v in nginx["volumes"])
    assert set(nginx["depends_on"]) == set(nodes), "nginx waits for every node"
    assert nginx["ulimits"]["nofile"]["hard"] >= 100_000

    # The upstream in deploy/nginx.conf names exactly the compose node services.
    conf = (ROOT / "deploy" / "nginx.conf").read_text()
    upstream = set(re.findall(r"^\s*server\s+([\w.-]+):9000;", conf, re.M))
    assert upstream == set(nodes)

    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", dockerfile, re.M)
    assert len(stages) == 2 and stages[0].startswith("rust:") and "slim" in stages[1]


def test_nginx_conf_passes_nginx_t(tmp_path):
    out = tmp_path / "nginx.conf"
    subprocess.run(
        [str(SCRIPTS / "cluster.sh"), "render-nginx", str(out), "18080", "19101", "19102", "19103"],
        check=True,
        timeout=10,
    )
    conf = out.read_text()
    assert conf.count("server 127.0.0.1:191") == 3
    for needle in (
        "least_conn;",
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
        "proxy_read_timeout",
        "access_log off;",
        "worker_rlimit_nofile",
        "listen 127.0.0.1:18080",
    ):
        assert needle in conf, needle
    result = subprocess.run(
        ["nginx", "-t", "-p", f"{tmp_path}/nginx/", "-c", str(out), "-g", "daemon off;"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def sysctl_settings() -> list[tuple[str, str, list[str]]]:
    """(key, value, the comment lines just above it) for each setting of sysctl.conf."""
    settings, comments = [], []
    for line in (ROOT / "sysctl.conf").read_text().splitlines():
        if line.startswith("#"):
            comments.append(line)
        elif not line.strip():
            comments = []
        else:
            m = re.fullmatch(r"([a-z0-9_]+(?:\.[a-z0-9_-]+)+) = (\d+(?: \d+)*)", line)
            assert m, f"not a well-formed `key = value` line: {line!r}"
            settings.append((m[1], m[2], comments))
            comments = []
    return settings


def test_sysctl_conf_is_well_formed_and_documented():
    settings = sysctl_settings()
    keys = [k for k, _, _ in settings]
    assert len(keys) == len(set(keys)), "a key is set twice"
    assert REQUIRED_SYSCTLS <= set(keys), REQUIRED_SYSCTLS - set(keys)
    for key, value, comments in settings:
        assert len(comments) >= 2, f"{key} needs a comment saying why"
    values = {k: v for k, v, _ in settings}
    assert int(values["fs.file-max"]) > 2_000_000, "both ends of 1M loopback connections"
    assert int(values["fs.nr_open"]) > 1_000_000, "one node holding 1M sockets"
    low, high = map(int, values["net.ipv4.ip_local_port_range"].split())
    assert 1024 <= low < high <= 65535


def test_tune_kernel_check_names_every_key_and_writes_nothing(tmp_path):
    state = tmp_path / "state"
    result = subprocess.run(
        [str(SCRIPTS / "tune-kernel.sh"), "--check", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    for key, _, _ in sysctl_settings():
        assert re.search(rf"^\s+{re.escape(key)}\s", result.stdout, re.M), key
    assert "ulimit" in result.stdout or "LimitNOFILE" in result.stdout or "soft" in result.stdout
    assert not state.exists()


def test_tune_kernel_reports_absent_and_refused_keys_then_undoes(tmp_path):
    # A private file: one key at its current value (so nothing changes), one the kernel
    # lacks, one read-only. The script reports each and carries on.
    somaxconn = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    conf = tmp_path / "sysctl.conf"
    conf.write_text(
        "# current value\nnet.core.somaxconn = %s\n# absent\nnet.no_such.key = 1\n"
        "# read-only\nfs.inode-nr = 1 1\n" % somaxconn
    )
    state = tmp_path / "state"
    tune = [str(SCRIPTS / "tune-kernel.sh"), "--file", str(conf), "--state", str(state)]
    first = subprocess.run(tune, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    assert re.search(r"net.core.somaxconn\s+unchanged", first.stdout)
    assert re.search(r"net.no_such.key\s+skipped", first.stdout)
    assert re.search(r"fs.inode-nr\s+REFUSED", first.stdout)
    saved = state.read_text()
    assert f"net.core.somaxconn = {somaxconn}" in saved
    again = subprocess.run(tune, capture_output=True, text=True, timeout=30)
    assert again.returncode == 0 and "kept from the first run" in again.stdout
    undo = subprocess.run(tune + ["--undo"], capture_output=True, text=True, timeout=30)
    assert undo.returncode == 0, undo.stderr
    assert not state.exists()
    assert Path("/proc/sys/net/core/somaxconn").read_text().strip() == somaxconn


@pytest.mark.parametrize("script", MY_SCRIPTS)
def test_script_header_strict_mode_and_syntax(script):
    path = SCRIPTS / script
    lines = path.read_text().splitlines()
    assert lines[0] == "#!/usr/bin/env bash"
    header = []
    for line in lines[1:]:
        if not line.startswith("#"):
            break
        header.append(line)
    assert len(header) >= 3, "a header comment saying what it does"
    assert re.search(r"undo", " ".join(header), re.I), "the header says how to undo it"
    assert "set -euo pipefail" in lines
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)
    help_run = subprocess.run([str(path), "--help"], capture_output=True, text=True, timeout=10)
    assert help_run.returncode == 0 and help_run.stdout.strip()


# ---------------------------------------------------------------- a real cluster


async def connect_and_locate(url: str, admins: list[str], count: int):
    """Opens `count` connections through nginx, one at a time, and finds the node each
    landed on from the nodes' switchboard_connections gauges."""
    placed = []
    for _ in range(count):
        before = [metric(a, "switchboard_connections") for a in admins]
        ws = await websockets.connect(url)

        def landed():
            after = [metric(a, "switchboard_connections") for a in admins]
            grown = [i for i, (a, b) in enumerate(zip(after, before)) if a > b]
            return grown if len(grown) == 1 else None

        node = (await asyncio.to_thread(wait_for, landed, "the new connection on a node"))[0]
        placed.append((ws, node))
    return placed


async def chat_alice_to_bob(alice, bob, admins, alice_node, bob_node):
    await alice.send(LOGIN.format("alice"))
    await bob.send(LOGIN.format("bob"))
    for node in {alice_node, bob_node}:
        want = 2 if alice_node == bob_node else 1
        await asyncio.to_thread(
            wait_for, lambda: metric(admins[node], "switchboard_users") >= want, "logins"
        )
    # Across nodes, bob's node may need a moment to subscribe his channel in Redis:
    # retry while alice is told he is not online, then demand exactly one delivery.
    deadline = time.monotonic() + 5
    while True:
        await alice.send(CHAT)
        try:
            got = await asyncio.wait_for(bob.recv(), 0.5)
            break
        except asyncio.TimeoutError:
            reply = await asyncio.wait_for(alice.recv(), 1)
            assert "not online" in reply and time.monotonic() < deadline, reply
    assert got == DELIVERED
    await assert_silent(bob)


def test_cluster_through_nginx_spreads_connections_and_delivers_chat(cluster):
    """Three nodes joined by Redis behind nginx; alice and bob on different nodes."""
    cluster.run("up", "3")
    pids = cluster.pids()
    expected = {"redis", "node-1", "node-2", "node-3", "nginx"}
    assert set(pids) == expected
    admins = cluster.admins(3)
    status = cluster.run("status")
    assert status.stdout.count(" up ") == len(expected), status.stdout
    # `up` again is harmless: it reports the running cluster.
    again = cluster.run("up", "3")
    assert "already up" in again.stdout and cluster.pids() == pids

    async def scenario():
        placed = await connect_and_locate(f"ws://127.0.0.1:{cluster.lb_port}/ws", admins, 6)
        nodes_used = {node for _, node in placed}
        assert len(nodes_used) == 3, f"least_conn spreads 6 connections over 3 nodes: {placed}"
        alice, alice_node = placed[0]
        bob, bob_node = next((ws, n) for ws, n in placed if n != alice_node)
        await chat_alice_to_bob(alice, bob, admins, alice_node, bob_node)
        for ws, _ in placed:
            await ws.close()

    asyncio.run(scenario())
    down = cluster.run("down")
    assert "stopped nginx" in down.stdout
    assert not [name for name, pid in pids.items() if pid_alive(pid)], "cluster.sh down left processes"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", cluster.lb_port), timeout=1).close()
    assert cluster.run("status", check=False).returncode == 3


def test_cluster_reuse_port_nodes_share_one_port(cluster):
    """--reuse-port: nodes share one port (no nginx); the kernel spreads connections."""
    cluster.run("up", "2", "--reuse-port")
    pids = cluster.pids()
    assert set(pids) == {"redis", "node-1", "node-2"}
    node_pids = [pids["node-1"], pids["node-2"]]

    def fds(pid):
        return len(os.listdir(f"/proc/{pid}/fd"))

    async def scenario():
        before = [fds(p) for p in node_pids]
        conns = [
            await websockets.connect(f"ws://127.0.0.1:{cluster.lb_port}/ws") for _ in range(24)
        ]
        await asyncio.to_thread(
            wait_for,
            lambda: sum(fds(p) for p in node_pids) - sum(before) >= 24,
            "24 sockets on the nodes",
        )
        grown = [fds(p) - b for p, b in zip(node_pids, before)]
        assert all(g > 0 for g in grown), f"both nodes got connections: {grown}"
        for ws in conns:
            await ws.close()

    asyncio.run(scenario())
    cluster.run("down")
    assert not [name for name, pid in pids.items() if pid_alive(pid)]
