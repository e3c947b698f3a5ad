"""The keyring at rest (issue 11 defect 13): encrypted `file` backend, plain `test` backend, BIP-39 mnemonics.

conftest gives every test GRADCHAIN_KEYRING_PASSPHRASE and a cheap scrypt cost;
the tests here pass their own passphrase sources where the flow matters.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from mnemonic import Mnemonic

from abci_app import crypto, keyring
from abci_app.keyring import (
    BACKEND_MARKER,
    TEST_BACKEND,
    TEST_BACKEND_WARNING,
    Keyring,
    KeyringError,
    export_key,
    key_from_mnemonic,
    new_mnemonic,
    slip10_ed25519,
)
from abci_app.localnet import dev_keyring

PASSPHRASE = "correct horse battery staple"
ABANDON_ART = " ".join(["abandon"] * 23 + ["art"])  # BIP-39 test vector 5: all-zero 256-bit entropy


def fixed(passphrase: str):
    asked: list[tuple[str, bool]] = []

    def source(question: str, confirm: bool) -> str:
        asked.append((question, confirm))
        return passphrase

    source.asked = asked  # type: ignore[attr-defined]
    return source


def no_passphrase(question: str, confirm: bool) -> str:
    raise AssertionError(f"asked for a passphrase: {question}")


def secret_forms(key: crypto.PrivateKey) -> list[bytes]:
    """Every way the seed could sit in a file in clear."""
    return [key.seed, key.seed.hex().encode(), key.seed.hex().upper().encode(), base64.b64encode(key.seed)]


# --- the encrypted `file` backend ------------------------------------------------------


def test_encrypted_round_trip_never_stores_the_seed(tmp_path: Path) -> None:
    """issue 11 defect 13: `keys add` wrote the ed25519 seed in clear; now AES-256-GCM under scrypt(passphrase)."""
    source = fixed(PASSPHRASE)
    ring = Keyring(tmp_path, passphrase=source)
    assert ring.backend == keyring.FILE_BACKEND  # the default
    key = ring.add("alice")
    assert source.asked == [("Enter a passphrase to encrypt key 'alice'", True)]  # confirmed at creation

    path = tmp_path / "keyring" / "alice.json"
    raw = path.read_bytes()
    for form in secret_forms(key):
        assert form not in raw
    data = json.loads(raw)
    assert "seed" not in data and data["version"] == 1 and data["crypto"]["cipher"] == "aes-256-gcm"
    assert data["crypto"]["kdf"] == "scrypt" and data["crypto"]["kdfparams"]["r"] == 8 and data["crypto"]["kdfparams"]["p"] == 1
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700

    reopened = Keyring(tmp_path, passphrase=fixed(PASSPHRASE))
    assert reopened.get("alice") == key
    public = Keyring(tmp_path, passphrase=no_passphrase)  # list/show/address need no passphrase
    info = public.info("alice")
    assert (info.address, info.pubkey, info.encrypted) == (key.address, key.pubkey.hex(), True)
    assert public.resolve_address("alice") == key.address


def test_same_key_twice_gives_different_ciphertexts(tmp_path: Path) -> None:
    """Random salt and nonce per file: two encryptions of one seed share nothing."""
    key = crypto.PrivateKey.generate()
    a, b = keyring.encrypt_key("a", key, PASSPHRASE), keyring.encrypt_key("b", key, PASSPHRASE)
    assert a["crypto"]["kdfparams"]["salt"] != b["crypto"]["kdfparams"]["salt"]
    assert a["crypto"]["nonce"] != b["crypto"]["nonce"] and a["crypto"]["ciphertext"] != b["crypto"]["ciphertext"]


def test_wrong_passphrase_is_refused(tmp_path: Path) -> None:
    """issue 11 defect 13: a wrong passphrase opens nothing and writes nothing."""
    Keyring(tmp_path, passphrase=fixed(PASSPHRASE)).add("alice")
    before = sorted(os.listdir(tmp_path / "keyring"))
    with pytest.raises(KeyringError, match="wrong passphrase for key 'alice'"):
        Keyring(tmp_path, passphrase=fixed("not the passphrase")).get("alice")
    exported = json.dumps(keyring.encrypt_key("x", crypto.PrivateKey.generate(), PASSPHRASE))
    with pytest.raises(KeyringError, match="wrong passphrase"):
        Keyring(tmp_path, passphrase=fixed("not the passphrase")).import_text("bob", exported)
    assert sorted(os.listdir(tmp_path / "keyring")) == before


@pytest.mark.parametrize("field", ["ciphertext", "nonce", "salt", "address", "pubkey"])
def test_tampered_file_is_rejected(tmp_path: Path, field: str) -> None:
    """issue 11 defect 13: GCM's tag covers the seed and the clear address/pubkey; any edit fails to open."""
    key = Keyring(tmp_path, passphrase=fixed(PASSPHRASE)).add("alice")
    path = tmp_path / "keyring" / "alice.json"
    data = json.loads(path.read_text())
    other = crypto.PrivateKey.generate()
    if field == "address":
        data["address"] = other.address  # a valid address: only the tag can tell
    elif field == "pubkey":
        data["pubkey"] = other.pubkey.hex()
    else:
        holder = data["crypto"]["kdfparams"] if field == "salt" else data["crypto"]
        raw = bytearray.fromhex(holder[field])
        raw[0] ^= 1
        holder[field] = raw.hex()
    path.write_text(json.dumps(data))
    with pytest.raises(KeyringError, match="wrong passphrase for key 'alice' \\(or its file was altered\\)"):
        Keyring(tmp_path, passphrase=fixed(PASSPHRASE)).get("alice")
    assert key.address != other.address


def test_kdf_parameters_from_a_file_are_bounded(tmp_path: Path) -> None:
    """A crafted key file cannot make us allocate gigabytes or skip the KDF's checks."""
    Keyring(tmp_path, passphrase=fixed(PASSPHRASE)).add("alice")
    path = tmp_path / "keyring" / "alice.json"
    for n, r, p in [(2**30, 8, 1), (2**21, 8, 1), (3000, 8, 1), (2**10, 0, 1), (2**10, True, 1), (2**10, 8, 1000)]:
        data = json.loads(path.read_text())
        data["crypto"]["kdfparams"].update(n=n, r=r, p=p)
        path.write_text(json.dumps(data))
        with pytest.raises(KeyringError, match="not a valid encrypted gradchain key: scrypt parameters out of range"):
            Keyring(tmp_path, passphrase=fixed(PASSPHRASE)).get("alice")


def test_default_scrypt_cost_is_memory_hard() -> None:
    """The default (not the tests' override) is at least n=2**15, r=8: >= 32 MiB per guess."""
    source = Path(keyring.__file__).read_text()
    assert "\nSCRYPT_N = 2**16\n" in source and "\nSCRYPT_R = 8\n" in source and "\nSCRYPT_P = 1\n" in source


def test_passphrase_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file's first line, then the environment, then a prompt; none of them: one clear error, nothing written."""
    monkeypatch.delenv(keyring.PASSPHRASE_ENV)
    with pytest.raises(KeyringError, match="no passphrase was given: set GRADCHAIN_KEYRING_PASSPHRASE, pass --passphrase-file"):
        Keyring(tmp_path).add("alice")
    assert not (tmp_path / "keyring" / "alice.json").exists()

    secret = tmp_path / "pass.txt"
    secret.write_text(PASSPHRASE + "\nignored\n")
    key = Keyring(tmp_path, passphrase=keyring.passphrase_source(secret)).add("alice")
    monkeypatch.setenv(keyring.PASSPHRASE_ENV, PASSPHRASE)
    assert Keyring(tmp_path).get("alice") == key
    asked = fixed(PASSPHRASE)
    monkeypatch.delenv(keyring.PASSPHRASE_ENV)
    assert Keyring(tmp_path, passphrase=keyring.passphrase_source(prompt=asked)).get("alice") == key
    assert asked.asked == [("Enter the passphrase of key 'alice'", False)]

    secret.write_text("")
    with pytest.raises(KeyringError, match="is empty"):
        Keyring(tmp_path, passphrase=keyring.passphrase_source(secret)).get("alice")
    with pytest.raises(KeyringError, match="passphrase too short"):
        Keyring(tmp_path, passphrase=fixed("short")).add("bob")
    assert not (tmp_path / "keyring" / "bob.json").exists()


def test_one_question_per_keyring_object(tmp_path: Path) -> None:
    """A command that opens several keys asks once: the passphrase that opened one is tried first on the next."""
    creator = Keyring(tmp_path, passphrase=fixed(PASSPHRASE))
    creator.add("alice"), creator.add("bob")
    source = fixed(PASSPHRASE)
    ring = Keyring(tmp_path, passphrase=source)
    ring.get("alice"), ring.get("bob")
    assert len(source.asked) == 1


# --- mnemonics ----------------------------------------------------------------------------


def test_slip10_ed25519_test_vector_1() -> None:
    """SLIP-0010's published ed25519 vector 1 (seed 000102...0f): the derivation under our mnemonics."""
    seed = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
    assert slip10_ed25519(seed, []).hex() == "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7"
    assert slip10_ed25519(seed, [0]).hex() == "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3"
    assert slip10_ed25519(seed, [0, 1, 2]).hex() == "92a5b23c0b8a99e37d07df3fb9966917f5d06e02ddbd909c7e184371463e9fc9"
    assert slip10_ed25519(seed, [0, 1, 2, 2]).hex() == "30d1dc7e5fc04c31219ab25a27ae00b50f6fd66622f6e9c913253d6511d1e662"


def test_bip39_test_vector_and_pinned_derivation() -> None:
    """BIP-39 vector 5 (passphrase TREZOR) for the word-to-seed step, then our path pinned for good.

    The last value was computed by this code (BIP-39 seed with an empty passphrase,
    SLIP-0010 ed25519 at m/44'/118'/0'/0'/0'): changing it would lock users out of keys
    they recover from their words, so it must never change.
    """
    assert Mnemonic.to_seed(ABANDON_ART, "TREZOR").hex() == (
        "bda85446c68413707090a52022edd26a1c9462295029f2e60cd7c4f2bbd3097170af7a4d73245cafa9c3cca8d561a7c3de6f5d4a10be8ed2a5e608d68f92fcc8"
    )
    assert keyring.HD_PATH_TEXT == "m/44'/118'/0'/0'/0'"
    key = key_from_mnemonic(ABANDON_ART)
    assert key.seed.hex() == "3bc1e4ddfeaa9e1279e07664c003088ad9576bf39e6386911c8e7017865ce8b4"
    assert key.address == "gc1pywgxt6s0n9qmv2vqgd8vpvcw73j2t26thwpgk"


def test_mnemonic_recovers_the_same_key(tmp_path: Path) -> None:
    """issue 11 defect 13: 24 fresh words rebuild the same key (and address) in another keyring."""
    words = new_mnemonic()
    assert len(words.split()) == 24 and Mnemonic("english").check(words)
    key = Keyring(tmp_path / "a", passphrase=fixed(PASSPHRASE)).add("alice", key_from_mnemonic(words))
    recovered = key_from_mnemonic("  " + words.upper().replace(" ", "\n ") + "\n")  # case and spacing do not matter
    assert recovered == key
    assert Keyring(tmp_path / "b", passphrase=fixed("another passphrase")).add("alice", recovered).address == key.address
    assert new_mnemonic() != words


@pytest.mark.parametrize("words", ["", "abandon " * 24, " ".join(["abandon"] * 23 + ["zoo"]), ABANDON_ART + " art", "hello world"])
def test_bad_mnemonic_is_one_clear_error(words: str) -> None:
    with pytest.raises(KeyringError, match="invalid mnemonic"):
        key_from_mnemonic(words)


# --- the plain `test` backend and older files ----------------------------------------


def test_test_backend_is_plain_and_warns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 11 defect 13: the plain backend exists only by choice and says so on every use (once per keyring object)."""
    warnings: list[str] = []
    ring = Keyring(tmp_path, backend=TEST_BACKEND, passphrase=no_passphrase, warn=warnings.append)
    key = ring.add("dev0")
    assert json.loads((tmp_path / "keyring" / "dev0.json").read_text()) == export_key("dev0", key)
    assert ring.get("dev0") == key and warnings == [TEST_BACKEND_WARNING]

    listing: list[str] = []
    Keyring(tmp_path, backend=TEST_BACKEND, warn=listing.append).info("dev0")
    assert listing == [TEST_BACKEND_WARNING]

    monkeypatch.setenv(keyring.BACKEND_ENV, TEST_BACKEND)
    assert Keyring(tmp_path).backend == TEST_BACKEND
    monkeypatch.setenv(keyring.BACKEND_ENV, "plain")
    with pytest.raises(KeyringError, match="unknown keyring backend 'plain'"):
        Keyring(tmp_path)


def test_localnet_keyring_is_marked_test(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A localnet's keyring picks `test` with no flag or env (workers and e2e never prompt); others stay `file`."""
    monkeypatch.delenv(keyring.PASSPHRASE_ENV)
    dev_keyring(tmp_path).add("dev0")
    assert (tmp_path / "keyring" / BACKEND_MARKER).read_text() == "test\n"
    warnings: list[str] = []
    ring = Keyring(tmp_path, passphrase=no_passphrase, warn=warnings.append)
    assert ring.backend == TEST_BACKEND and ring.add("dev1").address == ring.get("dev1").address
    assert warnings == [TEST_BACKEND_WARNING] and ring.names() == ["dev0", "dev1"]  # the marker is not a key
    assert Keyring(tmp_path / "elsewhere").backend == keyring.FILE_BACKEND
    unpinned = dev_keyring(tmp_path / "user", pin=False)
    unpinned.add("dev0")
    assert Keyring(tmp_path / "user").backend == keyring.FILE_BACKEND


def test_older_plain_files_still_load_with_a_warning(tmp_path: Path) -> None:
    """Keys written before encryption (plain JSON in a `file` keyring) keep working, so nobody is locked out."""
    old = crypto.PrivateKey.generate()
    (tmp_path / "keyring").mkdir()
    (tmp_path / "keyring" / "old.json").write_text(json.dumps(export_key("old", old)))
    warnings: list[str] = []
    ring = Keyring(tmp_path, passphrase=no_passphrase, warn=warnings.append)
    assert ring.backend == keyring.FILE_BACKEND
    assert ring.get("old") == old and ring.info("old").encrypted is False
    assert len(warnings) == 1 and "key 'old' is stored unencrypted" in warnings[0]


def test_import_accepts_export_output_and_encrypted_files(tmp_path: Path) -> None:
    """`keys export` output (plain) and a keyring's encrypted file both import; the result is encrypted."""
    key = crypto.PrivateKey.generate()
    ring = Keyring(tmp_path, passphrase=fixed(PASSPHRASE))
    assert ring.import_text("plain", json.dumps(export_key("x", key))) == key
    assert ring.import_text("sealed", (tmp_path / "keyring" / "plain.json").read_text()) == key
    for name in ("plain", "sealed"):
        raw = (tmp_path / "keyring" / f"{name}.json").read_bytes()
        assert all(form not in raw for form in secret_forms(key))
    with pytest.raises(KeyringError, match="already exists"):
        ring.import_text("plain", json.dumps(export_key("x", key)))
    with pytest.raises(KeyringError, match="not an exported gradchain key"):
        ring.import_text("junk", '{"crypto_": 1}')
