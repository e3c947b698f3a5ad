import asyncio

import pytest

from abci_app.abci.framing import FrameDecoder, FrameError, decode_varint, encode_frame, encode_varint
from abci_app.abci.server import Server, handle
from abci_app.pb.tendermint.abci import types_pb2 as abci


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 2**31, 2**63 - 1])
def test_varint_round_trip(value):
    encoded = encode_varint(value)
    assert decode_varint(encoded) == (value, len(encoded))


def test_varint_is_unsigned_not_zigzag():
    # Tendermint 0.34 wrote zigzag varints (1 -> 0x02); CometBFT >= 0.37 writes 1 -> 0x01.
    assert encode_varint(1) == b"\x01"
    assert encode_varint(300) == b"\xac\x02"


def test_truncated_varint_waits_for_more():
    assert decode_varint(b"\xac") is None


def test_overlong_varint_is_an_error():
    with pytest.raises(FrameError):
        decode_varint(b"\xff" * 11)


def test_frames_split_at_every_byte():
    frames = [b"", b"a", b"x" * 300, b"hello"]
    stream = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    out = []
    for i in range(len(stream)):
        out += decoder.feed(stream[i : i + 1])
    assert out == frames
    assert decoder.pending == 0


def test_concatenated_frames_in_one_read():
    frames = [b"one", b"two", b"three"]
    decoder = FrameDecoder()
    assert decoder.feed(b"".join(encode_frame(f) for f in frames) + b"\x05ab") == frames
    assert decoder.pending == 3
    assert decoder.feed(b"cde") == [b"abcde"]


def test_absurd_length_is_refused():
    with pytest.raises(FrameError):
        FrameDecoder().feed(encode_varint(2**40))


class EchoApp:
    def info(self, req):
        return abci.ResponseInfo(data="test", last_block_height=7)


def test_handle_echo_flush_info_and_defaults():
    app = EchoApp()
    assert handle(app, abci.Request(echo=abci.RequestEcho(message="hi"))).echo.message == "hi"
    assert handle(app, abci.Request(flush=abci.RequestFlush())).WhichOneof("value") == "flush"
    assert handle(app, abci.Request(info=abci.RequestInfo())).info.last_block_height == 7
    assert handle(app, abci.Request(extend_vote=abci.RequestExtendVote())).WhichOneof("value") == "extend_vote"


async def _roundtrip(server_addr_factory):
    server = Server(EchoApp(), server_addr_factory())
    await server.start()
    try:
        sock = server._server.sockets[0]
        if server.address.startswith("tcp://"):
            host, port = sock.getsockname()[:2]
            reader, writer = await asyncio.open_connection(host, port)
        else:
            reader, writer = await asyncio.open_unix_connection(server.address[len("unix://") :])
        requests = [
            abci.Request(echo=abci.RequestEcho(message="a")),
            abci.Request(info=abci.RequestInfo()),
            abci.Request(echo=abci.RequestEcho(message="b")),
            abci.Request(flush=abci.RequestFlush()),
        ]
        writer.write(b"".join(encode_frame(r.SerializeToString()) for r in requests[:3]))
        await writer.drain()
        # Answers wait for a Flush (CometBFT sends one after every request or batch), but not for ever:
        # CometBFT drops its timer's Flush when its queue is full.
        decoder, responses = FrameDecoder(), []
        while len(responses) < 3:
            responses += [abci.Response.FromString(f) for f in decoder.feed(await reader.read(4096))]
        writer.write(encode_frame(requests[3].SerializeToString()))
        await writer.drain()
        while len(responses) < 4:
            responses += [abci.Response.FromString(f) for f in decoder.feed(await reader.read(4096))]
        assert [r.WhichOneof("value") for r in responses] == ["echo", "info", "echo", "flush"]
        assert responses[2].echo.message == "b"

        # A malformed frame closes this connection only; the server keeps serving.
        writer.write(b"\x03\xff\xff\xff")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        reader2, writer2 = (
            await asyncio.open_connection(*sock.getsockname()[:2])
            if server.address.startswith("tcp://")
            else await asyncio.open_unix_connection(server.address[len("unix://") :])
        )
        writer2.write(encode_frame(abci.Request(echo=abci.RequestEcho(message="still up")).SerializeToString()) + encode_frame(abci.Request(flush=abci.RequestFlush()).SerializeToString()))
        await writer2.drain()
        decoder, responses = FrameDecoder(), []
        while len(responses) < 2:
            responses += [abci.Response.FromString(f) for f in decoder.feed(await reader2.read(4096))]
        assert responses[0].echo.message == "still up"
        writer2.close()
        assert server.failure is None
    finally:
        await server.close()


def test_server_answers_in_order_and_survives_malformed_frames_tcp():
    asyncio.run(asyncio.wait_for(_roundtrip(lambda: "tcp://127.0.0.1:0"), 20))


def test_server_over_unix_socket(tmp_path):
    asyncio.run(asyncio.wait_for(_roundtrip(lambda: f"unix://{tmp_path}/app.sock"), 20))
