"""Length-prefixed protobuf frames as CometBFT >= 0.37 writes them.

Each message is an *unsigned* varint length followed by that many bytes of
protobuf (Tendermint 0.34 used a zigzag varint, which is why older Python
ABCI libraries fail against CometBFT).
"""

from __future__ import annotations

MAX_FRAME_BYTES = 64 * 1024 * 1024  # CometBFT's blocks are far smaller; refuse absurd lengths
_MAX_VARINT_BYTES = 10


class FrameError(ValueError):
    """Bytes that cannot be a frame: a varint that overflows or an absurd length."""


def encode_varint(value: int) -> bytes:
    if value < 0:
        raise ValueError("varint must be non-negative")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf: bytes | bytearray, start: int = 0) -> tuple[int, int] | None:
    """(value, end offset), or None if buf ends inside the varint."""
    value = 0
    for i in range(_MAX_VARINT_BYTES):
        if start + i >= len(buf):
            return None
        byte = buf[start + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            return value, start + i + 1
    raise FrameError("varint longer than 10 bytes")


def encode_frame(payload: bytes) -> bytes:
    return encode_varint(len(payload)) + payload


class FrameDecoder:
    """Accumulates bytes from a stream and yields complete frames in order."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        frames = []
        offset = 0
        while True:
            header = decode_varint(self._buf, offset)
            if header is None:
                break
            length, body_start = header
            if length > MAX_FRAME_BYTES:
                raise FrameError(f"frame of {length} bytes exceeds the {MAX_FRAME_BYTES} byte limit")
            if body_start + length > len(self._buf):
                break
            frames.append(bytes(self._buf[body_start : body_start + length]))
            offset = body_start + length
        del self._buf[:offset]
        return frames

    @property
    def pending(self) -> int:
        """Bytes received that do not yet form a whole frame."""
        return len(self._buf)
