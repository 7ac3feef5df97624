"""The relay's own frame writer against a real WebSocket server (aiohttp's, which checks
client framing and masking), with the client's bytes recorded on the way."""

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import WSMsgType, web
from websockets.asyncio.client import ClientConnection, connect

from remotellm_connector.writer import FrameWriter, RelayGone


@dataclass
class Server:
    """Collects every binary message; records the raw bytes clients send (a TCP tap)."""

    url: str = ""
    received: list[bytes] = field(default_factory=list)
    raw: bytearray = field(default_factory=bytearray)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    #: Cleared: the server's handler stops reading messages.
    reading: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    state = Server()
    state.reading.set()

    async def relay(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=2 << 20)
        await ws.prepare(request)
        await state.reading.wait()
        async for msg in ws:
            if msg.type is WSMsgType.BINARY:
                state.received.append(msg.data)
                state.arrived.set()
        return ws

    app = web.Application()
    app.router.add_get("/v1/relay", relay)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])

    async def tap(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, log: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if log:
                        state.raw.extend(data)
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    tap_server = await asyncio.start_server(tap, "127.0.0.1", 0)
    state.url = f"ws://127.0.0.1:{tap_server.sockets[0].getsockname()[1]}/v1/relay"
    yield state
    tap_server.close()
    await runner.cleanup()


async def wait_received(server: Server, count: int) -> None:
    async with asyncio.timeout(10):
        while len(server.received) < count:
            server.arrived.clear()
            await server.arrived.wait()


def client_frames(raw: bytes) -> list[tuple[int, bytes, bytes]]:
    """``(first byte, mask key, unmasked payload)`` of each frame after the handshake."""
    data = raw[raw.index(b"\r\n\r\n") + 4 :]
    frames, at = [], 0
    while at < len(data):
        first, second = data[at], data[at + 1]
        assert second & 0x80, "a client frame must be masked"
        size, at = second & 0x7F, at + 2
        if size == 126:
            (size,), at = struct.unpack_from("!H", data, at), at + 2
        elif size == 127:
            (size,), at = struct.unpack_from("!Q", data, at), at + 8
        key, at = data[at : at + 4], at + 4
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(data[at : at + size]))
        frames.append((first, bytes(key), payload))
        at += size
    return frames


@contextlib.asynccontextmanager
async def connected(server: Server) -> AsyncIterator[ClientConnection]:
    async with connect(server.url, max_size=2 << 20, compression=None) as ws:
        yield ws


async def test_messages_of_every_length_class_arrive_whole_and_in_order(server: Server) -> None:
    sizes = [0, 1, 125, 126, 127, 65535, 65536, 200_000]
    payloads = [bytes([n % 251]) * n for n in sizes]
    async with connected(server) as ws:
        writer = FrameWriter(ws)
        for payload in payloads:
            writer.write(payload)
        await wait_received(server, len(payloads))
    assert server.received == payloads


async def test_frames_written_in_one_loop_turn_leave_in_one_socket_write(server: Server) -> None:
    async with connected(server) as ws:
        writer = FrameWriter(ws)
        assert ws.transport is not None
        transport = ws.transport
        writes: list[bytes] = []
        real_write = transport.write

        def counting_write(data: bytes | bytearray | memoryview) -> None:
            writes.append(bytes(data))
            real_write(data)

        transport.write = counting_write  # type: ignore[method-assign]
        for n in range(5):
            writer.write(b"frame %d" % n)
        assert writes == []  # nothing before the end of this loop turn
        await wait_received(server, 5)
        assert len(writes) == 1
    assert server.received == [b"frame %d" % n for n in range(5)]


async def test_every_frame_is_a_final_masked_binary_frame_with_a_fresh_key(
    server: Server,
) -> None:
    count = 1500  # more than one block of 1024 mask keys
    async with connected(server) as ws:
        writer = FrameWriter(ws)
        for n in range(count):
            writer.write(b"same payload")
            if n % 100 == 99:
                await asyncio.sleep(0)
        await wait_received(server, count)
    frames = client_frames(bytes(server.raw))
    binary = [f for f in frames if f[0] & 0x0F == 0x2]
    assert len(binary) == count
    assert all(first == 0x82 for first, _, _ in binary)  # FIN + binary, never fragmented
    assert all(payload == b"same payload" for _, _, payload in binary)
    keys = {key for _, key, _ in binary}
    assert len(keys) > count * 0.99  # 32 random bits each: collisions are rare


async def test_write_after_the_connection_closed_raises_relay_gone(server: Server) -> None:
    async with connected(server) as ws:
        writer = FrameWriter(ws)
        writer.write(b"before")
        await wait_received(server, 1)
    with pytest.raises(RelayGone):
        writer.write(b"after")
    writer.flush()  # nothing queued, connection closed: no error either
    assert server.received == [b"before"]


async def test_frames_queued_when_the_connection_closes_are_not_written(server: Server) -> None:
    async with connected(server) as ws:
        writer = FrameWriter(ws)
        writer.write(b"sent")
        await wait_received(server, 1)
        writer.write(b"queued, then the connection closes")
        await ws.close()
        writer.flush()  # must not write after the close frame
    await asyncio.sleep(0)
    assert server.received == [b"sent"]


async def test_drain_waits_while_the_broker_reads_nothing_and_resumes_after(
    server: Server,
) -> None:
    server.reading.clear()  # the broker stops reading: socket buffers fill up
    chunk = b"z" * (1 << 20)
    written = 0
    async with connected(server) as ws:
        writer = FrameWriter(ws)
        blocked: asyncio.Future[None] | None = None
        while written < 64:  # at most 64 MiB: far more than the socket buffers hold
            writer.write(chunk)
            written += 1
            await asyncio.sleep(0)  # the end of the loop turn: the frame goes to the socket
            drain = asyncio.ensure_future(writer.drain())
            done, _ = await asyncio.wait({drain}, timeout=0.2)
            if not done:
                blocked = drain
                break
        assert blocked is not None, "drain never waited, though nobody read"
        assert written < 64
        server.reading.set()
        async with asyncio.timeout(20):
            await blocked
        await wait_received(server, written)
    assert all(message == chunk for message in server.received)
