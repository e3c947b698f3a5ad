"""Keys on disk: one JSON file per key under <home>/keyring, mode 0600, with two backends as in the Cosmos SDK.

`file` (the default) keeps the 32-byte ed25519 seed encrypted with AES-256-GCM
under a key that scrypt derives from a passphrase; the address and public key
stay in clear, so listing keys needs no passphrase. `test` keeps the seed in
plain JSON and warns on every use: it is for a localnet's dev keys and tests,
and a localnet marks its keyring directory so its tools pick it without flags.
Plain files written by older versions still load, with a warning.

New keys come from a 24-word BIP-39 mnemonic (empty BIP-39 passphrase); the
seed is the SLIP-0010 ed25519 key at m/44'/118'/0'/0'/0', so `keys add
--recover` rebuilds the same key from the words alone.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from abci_app import crypto

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

FILE_BACKEND = "file"
TEST_BACKEND = "test"
BACKENDS = (FILE_BACKEND, TEST_BACKEND)
BACKEND_ENV = "GRADCHAIN_KEYRING_BACKEND"
PASSPHRASE_ENV = "GRADCHAIN_KEYRING_PASSPHRASE"
BACKEND_MARKER = "keyring-backend"  # a file in the keyring dir naming its backend; never *.json, so never a key
TEST_BACKEND_WARNING = "warning: keyring backend 'test' stores keys unencrypted; use it for localnets only"

FORMAT_VERSION = 1
CIPHER = "aes-256-gcm"
KDF = "scrypt"
# scrypt cost: 2**16 * 8 * 128 bytes = 64 MiB and ~0.2 s per guess. Tests lower SCRYPT_N (only there);
# reading always uses the parameters stored in the file, within the bounds below.
SCRYPT_N = 2**16
SCRYPT_R = 8
SCRYPT_P = 1
MAX_SCRYPT_MEMORY = 2**30  # 128 * n * r bytes: a crafted file cannot make us allocate more than 1 GiB
MIN_PASSPHRASE_CHARS = 8

HD_PATH = (44, 118, 0, 0, 0)  # BIP-44 purpose, the Cosmos coin type, account 0, change 0, index 0; all hardened
HD_PATH_TEXT = "m/" + "/".join(f"{i}'" for i in HD_PATH)
MNEMONIC_WORDS = 24

PassphraseSource = Callable[[str, bool], str]  # (prompt, confirm) -> passphrase


class KeyringError(Exception):
    """A key that is missing, duplicated, badly named, unreadable or locked by another passphrase."""


@dataclass(frozen=True)
class KeyInfo:
    """What is public about a stored key: readable without a passphrase."""

    name: str
    address: str
    pubkey: str  # hex
    encrypted: bool


# --- mnemonics -----------------------------------------------------------------


def _bip39():
    from mnemonic import Mnemonic  # imported late: only key creation and recovery need the word list

    return Mnemonic("english")


def new_mnemonic() -> str:
    """24 fresh BIP-39 words (256 bits of entropy from the OS)."""
    return _bip39().generate(strength=MNEMONIC_WORDS * 32 // 3)


def normalize_mnemonic(words: str) -> str:
    return " ".join(words.lower().split())


def key_from_mnemonic(words: str) -> crypto.PrivateKey:
    """The key of a BIP-39 mnemonic: SLIP-0010 ed25519 at HD_PATH from its seed (empty BIP-39 passphrase)."""
    words = normalize_mnemonic(words)
    bip39 = _bip39()
    if len(words.split()) not in (12, 15, 18, 21, 24) or not bip39.check(words):
        raise KeyringError(f"invalid mnemonic: expected 12 to {MNEMONIC_WORDS} words from the BIP-39 English list with a valid checksum")
    return crypto.PrivateKey(slip10_ed25519(bip39.to_seed(words, passphrase=""), HD_PATH))


def slip10_ed25519(seed: bytes, path: Sequence[int]) -> bytes:
    """SLIP-0010 private key derivation for ed25519 (which has hardened steps only); returns the 32-byte seed."""
    digest = hmac.new(b"ed25519 seed", seed, hashlib.sha512).digest()
    key, chain_code = digest[:32], digest[32:]
    for index in path:
        if not 0 <= index < 2**31:
            raise ValueError(f"path index {index} out of range")
        digest = hmac.new(chain_code, b"\x00" + key + (index | 2**31).to_bytes(4, "big"), hashlib.sha512).digest()
        key, chain_code = digest[:32], digest[32:]
    return key


# --- the encrypted format ------------------------------------------------------


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode())


def _aad(address: str, pubkey: str) -> bytes:
    """The clear fields, bound into the ciphertext's tag: editing them breaks decryption."""
    return f"gradchain-key/{FORMAT_VERSION}\n{address}\n{pubkey}".encode()


def encrypt_key(name: str, key: crypto.PrivateKey, passphrase: str) -> dict:
    salt, nonce = os.urandom(16), os.urandom(12)
    secret = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    pubkey = key.pubkey.hex()
    ciphertext = AESGCM(secret).encrypt(nonce, key.seed, _aad(key.address, pubkey))
    return {
        "version": FORMAT_VERSION,
        "name": name,
        "address": key.address,
        "pubkey": pubkey,
        "crypto": {
            "cipher": CIPHER,
            "nonce": nonce.hex(),
            "ciphertext": ciphertext.hex(),
            "kdf": KDF,
            "kdfparams": {"n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt.hex()},
        },
    }


def _hex(value: object, size: int | None = None) -> bytes:
    raw = bytes.fromhex(value) if isinstance(value, str) else b""
    if not raw or (size is not None and len(raw) != size):
        raise ValueError("bad hex field")
    return raw


def _parse_encrypted(data: dict) -> tuple[str, str, bytes, bytes, bytes, tuple[int, int, int]]:
    """Checks every field of an encrypted key before any work is done with it."""
    if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"unsupported version {data.get('version')!r} (this gradchain reads version {FORMAT_VERSION})")
    box, params = data["crypto"], data["crypto"]["kdfparams"]
    if box["cipher"] != CIPHER or box["kdf"] != KDF:
        raise ValueError(f"unsupported cipher/kdf {box['cipher']!r}/{box['kdf']!r}")
    n, r, p = params["n"], params["r"], params["p"]
    if not all(type(v) is int for v in (n, r, p)):
        raise ValueError("scrypt parameters out of range")
    if not (2 <= n and n & (n - 1) == 0 and 1 <= r and 128 * n * r <= MAX_SCRYPT_MEMORY and 1 <= p <= 4):
        raise ValueError("scrypt parameters out of range")
    salt = _hex(params["salt"])
    if not 16 <= len(salt) <= 64:
        raise ValueError("bad salt length")
    address, pubkey = crypto.parse_address(data["address"]), data["pubkey"]
    _hex(pubkey, crypto.PUBKEY_BYTES)
    return address, pubkey, salt, _hex(box["nonce"], 12), _hex(box["ciphertext"], 32 + 16), (n, r, p)


def decrypt_key(data: dict, passphrase: str, name: str = "") -> crypto.PrivateKey:
    """The key in an encrypted key file; KeyringError on a wrong passphrase or any edited byte."""
    address, pubkey, salt, nonce, ciphertext, (n, r, p) = _parse_encrypted(data)
    try:
        seed = AESGCM(_derive(passphrase, salt, n, r, p)).decrypt(nonce, ciphertext, _aad(address, pubkey))
    except InvalidTag:
        raise KeyringError(f"wrong passphrase for key '{name or address}' (or its file was altered)") from None
    key = crypto.PrivateKey(seed)
    if key.address != address or key.pubkey.hex() != pubkey:
        raise KeyringError(f"key '{name or address}' is inconsistent: its address does not match its seed")
    return key


# --- the plain format (test backend, older versions, `keys export`) -----------------


def export_key(name: str, key: crypto.PrivateKey) -> dict:
    return {"name": name, "address": key.address, "pubkey": key.pubkey.hex(), "seed": key.seed.hex()}


def import_key(text: str) -> tuple[str, crypto.PrivateKey]:
    """Parse an exported key (JSON from export_key); checks address and pubkey match the seed."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise KeyringError(f"not an exported gradchain key: {exc}") from None
    return str(data.get("name", "")) if isinstance(data, dict) else "", plain_key(data)


def plain_key(data: object) -> crypto.PrivateKey:
    """The key in a plain record (export_key's shape); checks address and pubkey match the seed."""
    try:
        key = crypto.PrivateKey(bytes.fromhex(data["seed"]))
        if len(key.seed) != 32:
            raise ValueError("seed must be 32 bytes")
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyringError(f"not an exported gradchain key: {exc}") from None
    if data.get("address", key.address) != key.address or data.get("pubkey", key.pubkey.hex()) != key.pubkey.hex():
        raise KeyringError("exported key is inconsistent: address/pubkey do not match its seed")
    return key


def is_encrypted(data: object) -> bool:
    return isinstance(data, dict) and "crypto" in data


# --- passphrases ---------------------------------------------------------------


def passphrase_source(passphrase_file: Path | None = None, prompt: PassphraseSource | None = None) -> PassphraseSource:
    """Where passphrases come from, first that applies: a file, $GRADCHAIN_KEYRING_PASSPHRASE, `prompt` (a terminal)."""

    def source(question: str, confirm: bool) -> str:
        if passphrase_file is not None:
            try:
                lines = Path(passphrase_file).read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise KeyringError(f"cannot read passphrase file {passphrase_file}: {exc}") from None
            if not lines or not lines[0]:
                raise KeyringError(f"passphrase file {passphrase_file} is empty: its first line is the passphrase")
            return lines[0]
        if os.environ.get(PASSPHRASE_ENV):
            return os.environ[PASSPHRASE_ENV]
        if prompt is not None:
            return prompt(question, confirm)
        raise KeyringError(
            f"the keyring is encrypted and no passphrase was given: set {PASSPHRASE_ENV}, pass --passphrase-file FILE, "
            "or run in a terminal to be asked"
        )

    return source


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)  # sys.stderr looked up at call time, so captured output sees it


def _marked_backend(directory: Path) -> str | None:
    try:
        return (directory / BACKEND_MARKER).read_text().strip() or None
    except OSError:
        return None


# --- the keyring ---------------------------------------------------------------


class Keyring:
    def __init__(self, home: str | os.PathLike, backend: str | None = None, passphrase: PassphraseSource | None = None,
                 warn: Callable[[str], None] | None = None):
        """`backend`: explicit choice, else $GRADCHAIN_KEYRING_BACKEND, else the dir's marker, else `file`."""
        self.dir = Path(home) / "keyring"
        self.backend = backend or os.environ.get(BACKEND_ENV) or _marked_backend(self.dir) or FILE_BACKEND
        if self.backend not in BACKENDS:
            raise KeyringError(f"unknown keyring backend '{self.backend}': use '{FILE_BACKEND}' or '{TEST_BACKEND}'")
        self._ask = passphrase or passphrase_source()
        self._warn = warn or _stderr
        self._warned: set[str] = set()
        self._passphrase: str | None = None  # the last one that opened a key: one question per command

    def _warn_once(self, line: str) -> None:
        if line not in self._warned:
            self._warned.add(line)
            self._warn(line)

    def _use(self) -> None:
        if self.backend == TEST_BACKEND:
            self._warn_once(TEST_BACKEND_WARNING)

    def _path(self, name: str) -> Path:
        if not NAME_PATTERN.match(name):
            raise KeyringError(f"invalid key name '{name}': use letters, digits, '.', '_' or '-'")
        return self.dir / f"{name}.json"

    def pin_backend(self) -> None:
        """Record this keyring's backend in its directory, so later uses pick it without a flag (localnets)."""
        self._mkdir()
        (self.dir / BACKEND_MARKER).write_text(self.backend + "\n")

    def _mkdir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)

    def _read(self, name: str) -> dict:
        path = self._path(name)
        if not path.exists():
            raise KeyringError(f"unknown key '{name}' (see `gradchain keys list`)")
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise KeyringError(f"key file {path} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise KeyringError(f"key file {path} is not a gradchain key")
        return data

    def check_new_name(self, name: str) -> Path:
        """The file for a new key `name`; KeyringError if the name is invalid or taken."""
        path = self._path(name)
        if path.exists():
            raise KeyringError(f"key '{name}' already exists in {self.dir}")
        return path

    def add(self, name: str, key: crypto.PrivateKey | None = None) -> crypto.PrivateKey:
        """Store a new (or given) key under `name`; refuses to overwrite. `file` asks for a passphrase (twice)."""
        self._use()
        path = self.check_new_name(name)
        key = key or crypto.PrivateKey.generate()
        if self.backend == TEST_BACKEND:
            record = export_key(name, key)
        else:
            passphrase = self._ask(f"Enter a passphrase to encrypt key '{name}'", True)
            if len(passphrase) < MIN_PASSPHRASE_CHARS:
                raise KeyringError(f"passphrase too short: use at least {MIN_PASSPHRASE_CHARS} characters")
            record = encrypt_key(name, key, passphrase)
            self._passphrase = passphrase
        text = json.dumps(record, indent=2, sort_keys=True)  # everything is ready before the file exists
        self._mkdir()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return key

    def info(self, name: str) -> KeyInfo:
        """Name, address and public key, without a passphrase."""
        self._use()
        data = self._read(name)
        try:
            if is_encrypted(data):
                address, pubkey, *_ = _parse_encrypted(data)
                return KeyInfo(name, address, pubkey, encrypted=True)
            key = plain_key(data)
        except (ValueError, KeyError, TypeError, crypto.AddressError, KeyringError) as exc:
            raise KeyringError(f"key file {self._path(name)} is not a valid gradchain key: {exc}") from None
        return KeyInfo(name, key.address, key.pubkey.hex(), encrypted=False)

    def address(self, name: str) -> str:
        return self.info(name).address

    def get(self, name: str) -> crypto.PrivateKey:
        """The private key; an encrypted one asks for its passphrase (once per keyring object if it opens the next)."""
        self._use()
        data = self._read(name)
        if not is_encrypted(data):
            if self.backend != TEST_BACKEND:
                self._warn_once(f"warning: key '{name}' is stored unencrypted (an older keyring format); "
                                "to encrypt it, `gradchain keys export` it and `gradchain keys import` it under a new name")
            try:
                return plain_key(data)
            except KeyringError as exc:
                raise KeyringError(f"key file {self._path(name)} is not a valid gradchain key: {exc}") from None
        return self.open(data, name)

    def open(self, data: dict, name: str) -> crypto.PrivateKey:
        """Decrypt an encrypted key record, trying the passphrase that opened the last key first."""
        try:
            _parse_encrypted(data)
        except (ValueError, KeyError, TypeError, crypto.AddressError) as exc:
            raise KeyringError(f"key '{name}' is not a valid encrypted gradchain key: {exc}") from None
        if self._passphrase is not None:
            try:
                return decrypt_key(data, self._passphrase, name)
            except KeyringError:
                pass
        passphrase = self._ask(f"Enter the passphrase of key '{name}'", False)
        key = decrypt_key(data, passphrase, name)
        self._passphrase = passphrase
        return key

    def import_text(self, name: str, text: str) -> crypto.PrivateKey:
        """Store a key from `keys export` output (plain JSON) or from an encrypted key file (asks its passphrase)."""
        self.check_new_name(name)  # refuse before asking anything
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        key = self.open(data, name) if is_encrypted(data) else import_key(text)[1]
        return self.add(name, key)

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json"))

    def resolve_address(self, name_or_address: str) -> str:
        """An address given directly, or the address of a key by name."""
        if crypto.is_address(name_or_address):
            return crypto.parse_address(name_or_address)
        if NAME_PATTERN.match(name_or_address) and self._path(name_or_address).exists():
            return self.address(name_or_address)
        raise KeyringError(f"'{name_or_address}' is neither a valid address nor a key name in {self.dir}")
