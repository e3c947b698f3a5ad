"""Byte-level tokenizer: token i < 256 is byte i of the UTF-8 text; 256 is end-of-text.

No training, no vocabulary file, nothing to drift between nodes: any text
round-trips exactly. `DESCRIPTION` is stored in every checkpoint so a loader
can refuse weights made for another tokenizer.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Iterator

EOT = 256
VOCAB_SIZE = 257
DESCRIPTION = "bytes-utf8-v1: ids 0-255 = UTF-8 bytes, 256 = <|endoftext|>"


class ByteTokenizer:
    description = DESCRIPTION
    vocab_size = VOCAB_SIZE
    eot = EOT

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return bytes(i for i in ids if i < 256)  # end-of-text carries no bytes

    def decode(self, ids: Iterable[int]) -> str:
        # A model can emit invalid UTF-8 (a lone continuation byte): show U+FFFD, never raise.
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def stream_decode(self, ids: Iterable[int]) -> Iterator[str]:
        """Yield text as soon as it forms complete UTF-8 characters (for streaming)."""
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        for i in ids:
            if i >= 256:
                continue
            piece = decoder.decode(bytes([i]))
            if piece:
                yield piece
        tail = decoder.decode(b"", final=True)  # an unfinished sequence at the end becomes U+FFFD
        if tail:
            yield tail
