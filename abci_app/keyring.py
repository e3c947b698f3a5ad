"""Keys on disk: one JSON file per key under <home>/keyring, mode 0600.

Plain files like CometBFT's priv_validator_key.json (test keyring semantics):
good for a localnet and a dev machine, not for keys that guard real value.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from abci_app import crypto

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class KeyringError(Exception):
    """A key that is missing, duplicated, badly named or unreadable."""


class Keyring:
    def __init__(self, home: str | os.PathLike):
        self.dir = Path(home) / "keyring"

    def _path(self, name: str) -> Path:
        if not NAME_PATTERN.match(name):
            raise KeyringError(f"invalid key name '{name}': use letters, digits, '.', '_' or '-'")
        return self.dir / f"{name}.json"

    def add(self, name: str, key: crypto.PrivateKey | None = None) -> crypto.PrivateKey:
        """Store a new (or given) key under `name`; refuses to overwrite."""
        path = self._path(name)
        if path.exists():
            raise KeyringError(f"key '{name}' already exists in {self.dir}")
        key = key or crypto.PrivateKey.generate()
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(export_key(name, key), f, indent=2, sort_keys=True)
        return key

    def get(self, name: str) -> crypto.PrivateKey:
        path = self._path(name)
        if not path.exists():
            raise KeyringError(f"unknown key '{name}' (see `gradchain keys list`)")
        return import_key(path.read_text())[1]

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json"))

    def resolve_address(self, name_or_address: str) -> str:
        """An address given directly, or the address of a key by name."""
        if crypto.is_address(name_or_address):
            return crypto.parse_address(name_or_address)
        if NAME_PATTERN.match(name_or_address) and self._path(name_or_address).exists():
            return self.get(name_or_address).address
        raise KeyringError(f"'{name_or_address}' is neither a valid address nor a key name in {self.dir}")


def export_key(name: str, key: crypto.PrivateKey) -> dict:
    return {"name": name, "address": key.address, "pubkey": key.pubkey.hex(), "seed": key.seed.hex()}


def import_key(text: str) -> tuple[str, crypto.PrivateKey]:
    """Parse an exported key (JSON from export_key); checks address and pubkey match the seed."""
    try:
        data = json.loads(text)
        key = crypto.PrivateKey(bytes.fromhex(data["seed"]))
        if len(key.seed) != 32:
            raise ValueError("seed must be 32 bytes")
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyringError(f"not an exported gradchain key: {exc}") from None
    if data.get("address", key.address) != key.address or data.get("pubkey", key.pubkey.hex()) != key.pubkey.hex():
        raise KeyringError("exported key is inconsistent: address/pubkey do not match its seed")
    return str(data.get("name", "")), key
