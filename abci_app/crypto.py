"""ed25519 keys, bech32 addresses and the bytes a transaction signature covers.

An address is the first 20 bytes of sha256(pubkey), like CometBFT's validator
addresses, shown as bech32 with the human-readable part "gc" so a mistyped
address fails its checksum instead of sending tokens nowhere.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.bindings import crypto_sign_open
from nacl.exceptions import CryptoError

ADDRESS_HRP = "gc"
ADDRESS_BYTES = 20
PUBKEY_BYTES = 32
SIGNATURE_BYTES = 64
SIGN_DOMAIN = b"gradchain/tx/v1"


class AddressError(ValueError):
    """A string that is not a valid GradientChain address."""


# --- bech32 (BIP-173) -------------------------------------------------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: list[int]) -> int:
    checksum = 1
    for value in values:
        top = checksum >> 25
        checksum = (checksum & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                checksum ^= generator
    return checksum


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _convert_bits(data: bytes | list[int], from_bits: int, to_bits: int, pad: bool) -> list[int]:
    acc, bits, out, maxv = 0, 0, [], (1 << to_bits) - 1
    for value in data:
        acc = (acc << from_bits) | value
        bits += from_bits
        while bits >= to_bits:
            bits -= to_bits
            out.append((acc >> bits) & maxv)
    if pad and bits:
        out.append((acc << (to_bits - bits)) & maxv)
    elif not pad and (bits >= from_bits or (acc << (to_bits - bits)) & maxv):
        raise AddressError("invalid bech32 padding")
    return out


@functools.lru_cache(maxsize=1 << 12)
def bech32_encode(hrp: str, data: bytes) -> str:
    words = _convert_bits(data, 8, 5, pad=True)
    polymod = _polymod(_hrp_expand(hrp) + words + [0] * 6) ^ 1
    checksum = [(polymod >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words + checksum)


BECH32_MAX_LEN = 90  # BIP-173: longer strings are not bech32


def bech32_decode(text: str) -> tuple[str, bytes]:
    # Checked before the cache: free queries must not fill it with huge strings.
    if len(text) > BECH32_MAX_LEN:
        raise AddressError(f"too long: {len(text)} characters, bech32 allows {BECH32_MAX_LEN}")
    if not text.isascii():  # before lower(): Unicode case mapping could turn a non-ASCII letter into ASCII
        raise AddressError("invalid character")
    return _bech32_decode(text)


# Addresses are decoded for every state key a tx touches; the checksum loop is
# pure Python, so results are memoised (pure functions: safe for consensus).
# Bounded in entries, and each entry is at most BECH32_MAX_LEN characters.
@functools.lru_cache(maxsize=1 << 12)
def _bech32_decode(text: str) -> tuple[str, bytes]:
    if text.lower() != text and text.upper() != text:
        raise AddressError("mixed case")
    text = text.lower()
    sep = text.rfind("1")
    if sep < 1 or sep + 7 > len(text):
        raise AddressError("missing separator or checksum")
    hrp, rest = text[:sep], text[sep + 1 :]
    if any(c not in _CHARSET for c in rest):
        raise AddressError("invalid character")
    words = [_CHARSET.index(c) for c in rest]
    if _polymod(_hrp_expand(hrp) + words) != 1:
        raise AddressError("bad checksum")
    return hrp, bytes(_convert_bits(words[:-6], 5, 8, pad=False))


# --- addresses ---------------------------------------------------------------


def address_bytes(pubkey: bytes) -> bytes:
    """The 20-byte account id of an ed25519 public key."""
    return hashlib.sha256(pubkey).digest()[:ADDRESS_BYTES]


@functools.lru_cache(maxsize=1 << 12)
def address_of(pubkey: bytes) -> str:
    return bech32_encode(ADDRESS_HRP, address_bytes(pubkey))


@functools.lru_cache(maxsize=1 << 14)
def address_raw(address: str) -> bytes:
    """The 20 bytes behind a bech32 address: how state keys spell accounts. Memoised: modules
    take addresses as text, and every state key they build from one decodes it."""
    return bech32_decode(address)[1]


def parse_address(text: str) -> str:
    """Return the canonical (lower-case) form of `text`, or raise AddressError."""
    hrp, data = bech32_decode(text.strip(" \t\r\n"))  # ASCII whitespace only: str.strip() follows the Unicode database
    if hrp != ADDRESS_HRP:
        raise AddressError(f"expected prefix '{ADDRESS_HRP}1', got '{hrp}1'")
    if len(data) != ADDRESS_BYTES:
        raise AddressError(f"expected {ADDRESS_BYTES} bytes, got {len(data)}")
    return bech32_encode(ADDRESS_HRP, data)


def is_address(text: str) -> bool:
    try:
        parse_address(text)
    except AddressError:
        return False
    return True


# --- keys and signatures -----------------------------------------------------


def sign_bytes(chain_id: str, body: bytes) -> bytes:
    """What a tx signature covers: chain_id inside stops replay across chains."""
    return SIGN_DOMAIN + chain_id.encode() + body


@dataclass(frozen=True)
class PrivateKey:
    seed: bytes  # the 32-byte ed25519 seed

    @classmethod
    def generate(cls) -> "PrivateKey":
        key = Ed25519PrivateKey.generate()
        return cls(key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))

    @property
    def pubkey(self) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def address(self) -> str:
        return address_of(self.pubkey)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)


def verify(pubkey: bytes, message: bytes, signature: bytes) -> bool:
    """ed25519 verification by libsodium (PyNaCl): ~60 us here against OpenSSL's ~120 us
    (bench/state.py). libsodium is the stricter of the two (it also refuses
    small-order keys and R points), and every node runs the same locked build
    (scripts/consensus.lock), so every node gives the same answer."""
    if len(pubkey) != PUBKEY_BYTES or len(signature) != SIGNATURE_BYTES:
        return False
    try:
        crypto_sign_open(signature + message, pubkey)
    except (CryptoError, ValueError, TypeError):  # BadSignatureError is a CryptoError
        return False
    return True
