"""Starts the real switchboard binary for the interoperability tests."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def node_binary() -> pathlib.Path:
    """SWITCHBOARD_BIN, else the newest of the release and debug builds."""
    if os.environ.get("SWITCHBOARD_BIN"):
        return pathlib.Path(os.environ["SWITCHBOARD_BIN"])
    built = [ROOT / "target" / p / "switchboard" for p in ("release", "debug")]
    built = [p for p in built if p.exists()]
    if built:
        return max(built, key=lambda p: p.stat().st_mtime)
    subprocess.run(["cargo", "build", "--release", "-p", "switchboard"], cwd=ROOT, check=True)
    return ROOT / "target" / "release" / "switchboard"


class Node:
    def __init__(self, *args: str):
        self.proc = subprocess.Popen(
            [str(node_binary()), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.PIPE,
            env={**os.environ, "RUST_LOG": "warn"},
            text=True,
        )
        line = self.proc.stdout.readline().strip()
        prefix = "switchboard listening on "
        assert line.startswith(prefix), f"unexpected first line: {line!r}"
        self.addr = line[len(prefix):]

    def url(self, path: str = "/ws") -> str:
        return f"ws://{self.addr}{path}"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def node():
    n = Node("--echo-path", "/echo", "--max-message-size", "2000000")
    yield n
    n.stop()
