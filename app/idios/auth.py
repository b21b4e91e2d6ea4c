"""API keys: `Authorization: Bearer <key>`, each key with a scope, `read` or `write`.

Only SHA-256 hashes of keys are configured (`IDIOS_API_KEYS`, `IDIOS_API_KEYS_FILE`), so a leaked
configuration does not leak keys. With neither set the API is open; one that is set but holds no
key is a configuration error, never an open API.
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
ENTRY_FORMAT = "an API key entry is 'read:<sha256 hex>' or 'write:<sha256 hex>' (see `idios hash-key`)"


class ConfigError(ValueError):
    """A setting that must stop the server from starting; the message is one line for the operator."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return "idios_" + secrets.token_urlsafe(32)


def parse_entry(entry: str) -> tuple[str, Scope]:
    """`write:<sha256 hex>` (or `write <hex>`) → (hash, scope)."""
    scope, _, digest = entry.strip().replace(" ", ":", 1).partition(":")
    digest = digest.strip().lower()
    if scope not in SCOPES or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(ENTRY_FORMAT)
    return digest, scope


def read_keys_file(path: Path) -> list[tuple[str, Scope]]:
    """The entries of a keys file: one per line; blank lines and lines starting with '#' (after any
    indentation) are skipped. Raise ConfigError when it cannot be read, has a bad line (named by its
    number only: a line may be a raw key pasted by mistake) or holds no entry at all."""
    where = f"IDIOS_API_KEYS_FILE={path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{where} is a directory, not a keys file") from None
    except PermissionError:
        raise ConfigError(f"{where} cannot be read (permission denied)") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read ({exc.strerror or type(exc).__name__})") from None
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            entries.append(parse_entry(stripped))
        except ValueError:
            raise ConfigError(f"{where}, line {number}: {ENTRY_FORMAT}") from None
    if not entries:
        raise ConfigError(
            f"{where} holds no API key entry (only comments or blank lines): add a 'read:<sha256>' or "
            "'write:<sha256>' line (`idios hash-key`), or unset IDIOS_API_KEYS_FILE for an open API"
        )
    return entries


@dataclass
class KeyRing:
    scopes: dict[str, Scope]

    @classmethod
    def load(cls, entries: list[str], path: Path | None) -> KeyRing:
        """The keys of IDIOS_API_KEYS (`entries`) and of the keys file; ConfigError for a bad entry,
        or a keys file that is set but cannot be read or holds no key."""
        pairs = []
        for number, entry in enumerate(entries, 1):
            try:
                pairs.append(parse_entry(entry))
            except ValueError:
                raise ConfigError(f"IDIOS_API_KEYS, entry {number}: {ENTRY_FORMAT}") from None
        if path is not None:
            pairs += read_keys_file(path)
        return cls(dict(pairs))

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
