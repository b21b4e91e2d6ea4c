"""API keys: `Authorization: Bearer <key>`, each key with a scope, `read` or `write`.

Only SHA-256 hashes of keys are configured (`IDIOS_API_KEYS`, `IDIOS_API_KEYS_FILE`), so a leaked
configuration does not leak keys. With no key configured the API is open.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from idios.errors import Forbidden, Unauthorized

Scope = Literal["read", "write"]
SCOPES: tuple[Scope, ...] = ("read", "write")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return "idios_" + secrets.token_urlsafe(32)


def parse_entry(entry: str) -> tuple[str, Scope]:
    """`write:<sha256 hex>` (or `write <hex>`) → (hash, scope)."""
    scope, _, digest = entry.strip().replace(" ", ":", 1).partition(":")
    digest = digest.strip().lower()
    if scope not in SCOPES or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError("an API key entry is 'read:<sha256 hex>' or 'write:<sha256 hex>' (see `idios hash-key`)")
    return digest, scope  # type: ignore[return-value]


@dataclass
class KeyRing:
    scopes: dict[str, Scope]

    @classmethod
    def load(cls, entries: list[str], path: Path | None) -> KeyRing:
        lines = list(entries)
        if path is not None:
            lines += [line for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]
        return cls(dict(parse_entry(line) for line in lines))

    @property
    def open(self) -> bool:
        return not self.scopes

    def check(self, authorization: str | None, needed: Scope) -> None:
        """Raise 401 without a valid key, 403 when the key's scope does not cover `needed`."""
        if self.open:
            return
        scheme, _, key = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthorized("this API needs a key: send 'Authorization: Bearer <key>'")
        scope = self.scopes.get(hash_key(key.strip()))
        if scope is None:
            raise Unauthorized("unknown API key")
        if needed == "write" and scope != "write":
            raise Forbidden("this key may only read; writing needs a key with the write scope")
