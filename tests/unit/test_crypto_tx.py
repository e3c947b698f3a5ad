import pytest

from abci_app import crypto, tx


def test_address_round_trip_and_checksum():
    key = crypto.PrivateKey.generate()
    address = key.address
    assert address.startswith("gc1")
    assert crypto.parse_address(address.upper()) == address
    broken = address[:-1] + ("q" if address[-1] != "q" else "p")
    with pytest.raises(crypto.AddressError, match="checksum"):
        crypto.parse_address(broken)


def test_address_wrong_prefix_and_length():
    other = crypto.bech32_encode("cosmos", b"\x01" * 20)
    with pytest.raises(crypto.AddressError, match="prefix"):
        crypto.parse_address(other)
    with pytest.raises(crypto.AddressError, match="bytes"):
        crypto.parse_address(crypto.bech32_encode("gc", b"\x01" * 19))


def test_bech32_known_vector():
    # BIP-173 test vector: a valid checksum for an empty payload.
    assert crypto.bech32_decode("a12uel5l") == ("a", b"")


def test_sign_and_verify():
    key = crypto.PrivateKey.generate()
    sig = key.sign(b"msg")
    assert crypto.verify(key.pubkey, b"msg", sig)
    assert not crypto.verify(key.pubkey, b"other", sig)
    assert not crypto.verify(key.pubkey, b"msg", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not crypto.verify(b"short", b"msg", sig)


def test_tx_build_decode_verify():
    key = crypto.PrivateKey(bytes(range(32)))
    raw = tx.build(key, "chain-a", 3, 5, tx.MsgSend(recipient=key.address, amount=7), memo="hi")
    signed = tx.decode(raw)
    assert signed.signer == key.address
    assert (signed.body.nonce, signed.body.fee, signed.body.memo) == (3, 5, "hi")
    assert signed.msg_name == "send" and signed.msg.amount == 7
    assert signed.signature_valid()
    # Deterministic encoding: the same inputs give the same bytes (ed25519 is deterministic too).
    assert raw == tx.build(key, "chain-a", 3, 5, tx.MsgSend(recipient=key.address, amount=7), memo="hi")


def test_signature_covers_chain_id():
    key = crypto.PrivateKey.generate()
    raw = tx.build(key, "chain-a", 0, 1, tx.MsgSend(recipient=key.address, amount=1))
    envelope = tx.Tx.FromString(raw)
    body = tx.TxBody.FromString(envelope.body)
    body.chain_id = "chain-b"
    forged = tx.Tx(body=body.SerializeToString(), pubkey=envelope.pubkey, signature=envelope.signature).SerializeToString()
    assert not tx.decode(forged).signature_valid()


@pytest.mark.parametrize(
    "raw, match",
    [
        (b"\xff\xff\xff", "malformed"),
        (tx.Tx(body=b"", pubkey=b"\x00" * 32, signature=b"\x00" * 64).SerializeToString(), "no message"),
        (tx.Tx(body=b"", pubkey=b"\x00" * 31, signature=b"\x00" * 64).SerializeToString(), "pubkey"),
        (b"\x00" * (tx.MAX_TX_BYTES + 1), "limit"),
    ],
)
def test_decode_rejects(raw, match):
    with pytest.raises(tx.TxDecodeError, match=match):
        tx.decode(raw)
