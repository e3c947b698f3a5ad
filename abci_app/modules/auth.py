"""auth: per-account nonces, checked and bumped by the runtime for every tx.

Nonces are strictly sequential, so a signed tx can be applied at most once.
"""

from __future__ import annotations

from abci_app import crypto
from abci_app.context import ModuleError, decode_int, encode_int
from abci_app.state import Overlay

# --- Storage --------------------------------------------------------------------

PREFIX = b"auth/"


def nonce_key(account: bytes) -> bytes:
    """auth/nonce/<20-byte account id> -> next nonce (decimal)."""
    return PREFIX + b"nonce/" + account


def get_nonce(state: Overlay, account: bytes) -> int:
    """The nonce the account's next tx must carry (0 for a new account). Accounts are 20-byte
    ids here, as the decoded tx gives them (SignedTx.signer_id): no bech32 on the hot path."""
    return decode_int(state.get(nonce_key(account)))


def bump_nonce(state: Overlay, account: bytes) -> None:
    state.set(nonce_key(account), encode_int(get_nonce(state, account) + 1))


# --- Errors ---------------------------------------------------------------------


class BadNonce(ModuleError):
    """The tx's nonce is not the account's next nonce."""

    codespace = "runtime"
    code = 5


def check_nonce(state: Overlay, account: bytes, nonce: int) -> None:
    """Raise BadNonce unless nonce is the account's next one. The mempool applies the
    same rule to its own view, so it holds only contiguous nonces: a gap never waits there."""
    expected = get_nonce(state, account)
    if nonce == expected:
        return
    address = crypto.bech32_encode(crypto.ADDRESS_HRP, account)
    if nonce < expected:
        raise BadNonce(f"bad nonce: {nonce} already used, account {address} expects {expected}")
    raise BadNonce(f"bad nonce: got {nonce}, account {address} expects {expected} (send the txs before it first)")


# --- Queries --------------------------------------------------------------------


def query_nonce(data: bytes) -> bytes:
    """/auth/nonce ADDRESS -> next nonce (decimal; empty = 0)."""
    return nonce_key(crypto.address_raw(crypto.parse_address(data.decode())))


QUERIES = {"nonce": query_nonce}
