"""Interoperability with an independent WebSocket implementation: Python's
`websockets` package, used the way a seed client would use any library."""
import asyncio
import json

import pytest
import websockets
from websockets.exceptions import ConnectionClosed


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


def seed_chat(data, to, sender):
    return json.dumps({"MessageType": "chatmsg", "Data": data, "Reciever": to, "Sender": sender},
                      separators=(",", ":"), ensure_ascii=False) + "\n"


async def logged_in(url, name):
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"MessageType": "loginmsg", "Sender": name}))
    await ws.send(json.dumps({"MessageType": "chatmsg", "Data": "probe", "Reciever": name}))
    assert await ws.recv() == seed_chat("probe", name, name)
    return ws


def test_seed_protocol_round_trip(node):
    async def scenario():
        alice = await logged_in(node.url(), "alice")
        bob = await logged_in(node.url(), "bob")
        await alice.send(json.dumps({"MessageType": "chatmsg", "Data": "héllo", "Reciever": "bob", "Sender": "alice"}))
        got = await bob.recv()
        assert got == seed_chat("héllo", "bob", "alice")
        assert list(json.loads(got)) == ["MessageType", "Data", "Reciever", "Sender"]
        dup = await websockets.connect(node.url())
        await dup.send(json.dumps({"MessageType": "loginmsg", "Sender": "alice"}))
        assert json.loads(await dup.recv()) == "User already exists"
        for ws in (alice, bob, dup):
            await ws.close()
    run(scenario())


def test_fragmented_message_and_ping(node):
    async def scenario():
        ws = await logged_in(node.url(), "frag")
        msg = json.dumps({"MessageType": "chatmsg", "Data": "pieces €", "Reciever": "frag"})
        await ws.send([msg[:7], msg[7:20], msg[20:]])  # an iterable is sent as fragments
        assert await ws.recv() == seed_chat("pieces €", "frag", "frag")
        latency = await (await ws.ping(b"hello"))
        assert latency >= 0
        await ws.close()
    run(scenario())


def test_close_handshake_codes(node):
    async def scenario():
        ws = await websockets.connect(node.url())
        await ws.close(code=4001, reason="done")
        assert ws.close_code == 4001
        ws = await websockets.connect(node.url())
        await ws.send(b"\x00binary")
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd.code == 1003
    run(scenario())


def test_echo_endpoint_large_messages(node):
    async def scenario():
        ws = await websockets.connect(node.url("/echo"), max_size=None)
        blob = bytes(range(256)) * 4096  # 1 MiB
        await ws.send(blob)
        assert await ws.recv() == blob
        await ws.send("ünïcode " * 1000)
        assert await ws.recv() == "ünïcode " * 1000
        await ws.close()
    run(scenario())
