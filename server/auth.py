"""API keys: who may call what, on which indexes.

Keys come from ``SAEDEX_API_KEYS`` (comma-separated; each is an admin key on every index, as
before) and/or a keys file (``SAEDEX_KEYS_FILE`` or ``saedex serve --keys-file``), JSON::

    {"keys": [
      {"id": "alice", "sha256": "<hex digest of the key>", "role": "search", "indexes": ["rt"]},
      {"id": "audit-bot", "key": "plain-text-key", "role": "analyses"}
    ]}

A file should hold digests (``sha256``), so reading it does not reveal a key; ``key`` is
accepted for convenience. Roles are ordered: ``search`` (search, latents, documents, info) <
``analyses`` (+ diff, correlations, clusters jobs) < ``admin`` (+ every key's jobs). ``indexes``
omitted means every index.

Keys are parsed and validated once, at start-up: a malformed entry is an error naming it, and a
variable that is set but holds no key (``" , "``) is refused rather than read as "no auth".
Tokens are compared as SHA-256 digests of their UTF-8 bytes with ``hmac.compare_digest`` against
every key (no early exit), so neither a non-ASCII token nor timing reveals anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from indexer.core.errors import InputError
from indexer.core.paths import INDEX_NAME_RE
from indexer.core.settings import settings

log = logging.getLogger("saedex.auth")
ROLES = ("search", "analyses", "admin")
MIN_KEY_CHARS = 8
_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


class KeyConfigError(InputError):
    """The key configuration is unusable; the server refuses to start."""


@dataclass(frozen=True)
class ApiKey:
    id: str
    digest: bytes
    role: str = "admin"
    indexes: frozenset[str] | None = None  # None: every index

    def may(self, role: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(role)

    def may_index(self, index: str) -> bool:
        return self.indexes is None or index in self.indexes


def digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def check_secret(key: str, where: str) -> str:
    """A key a client can send: printable ASCII without spaces (HTTP headers are Latin-1, so a
    non-ASCII key was accepted at start-up and could never match)."""
    if len(key) < MIN_KEY_CHARS or any(c.isspace() or not c.isprintable() or not c.isascii() for c in key):
        raise KeyConfigError(f"{where}: a key must be at least {MIN_KEY_CHARS} printable ASCII characters without spaces")
    return key


DIGEST_HOWTO = "saedex key-digest KEY (prints the sha256 digest to store instead)"


def key_file_warnings(path: Path, entries: list) -> list[str]:
    """What is risky about a keys file that is still accepted: plaintext keys, and a file other
    users may read or write."""
    out = []
    plain = sum(1 for e in entries if isinstance(e, dict) and "key" in e)
    try:
        mode = Path(path).stat().st_mode & 0o777
    except OSError:
        mode = 0
    if mode & 0o022:
        out.append(f"keys file {path} is writable by other users (mode {mode:o}): anyone could add a key; chmod 600 it")
    if plain and mode & 0o044:
        out.append(f"keys file {path} holds {plain} plaintext key(s) and is readable by other users (mode {mode:o}); "
                   f"chmod 600 it, or store digests: {DIGEST_HOWTO}")
    elif plain:
        out.append(f"keys file {path} holds {plain} plaintext key(s); prefer digests: {DIGEST_HOWTO}")
    return out


def keys_from_env(value: str | None) -> list[ApiKey]:
    """``SAEDEX_API_KEYS=k1,k2``: admin keys on every index, ids ``env-1``, ``env-2``, ..."""
    if value is None:
        return []
    parts = [p.strip() for p in value.split(",")]
    if not any(parts):
        raise KeyConfigError("SAEDEX_API_KEYS is set but holds no key (unset it to serve on loopback without auth)")
    keys = []
    for n, part in enumerate(parts, 1):
        if not part:
            raise KeyConfigError(f"SAEDEX_API_KEYS: entry {n} is empty")
        keys.append(ApiKey(f"env-{n}", digest(check_secret(part, f"SAEDEX_API_KEYS entry {n}"))))
    return keys


def keys_from_file(path: Path) -> list[ApiKey]:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise KeyConfigError(f"keys file {path}: {e}") from None
    entries = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise KeyConfigError(f"keys file {path}: expected {{\"keys\": [...]}}")
    if not entries:  # an explicitly empty key set is a mistake, never "no auth"
        raise KeyConfigError(f"keys file {path} holds no key (remove the file or add keys)")
    for warning in key_file_warnings(Path(path), entries):
        log.warning("%s", warning)
    keys = []
    for n, e in enumerate(entries, 1):
        where = f"keys file {path}, entry {n}"
        if not isinstance(e, dict):
            raise KeyConfigError(f"{where}: expected an object")
        unknown = set(e) - {"id", "key", "sha256", "role", "indexes"}
        if unknown:
            raise KeyConfigError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        kid = e.get("id")
        if not isinstance(kid, str) or not _ID.match(kid):
            raise KeyConfigError(f"{where}: 'id' must be 1-64 characters from [A-Za-z0-9_.@-]")
        if ("key" in e) == ("sha256" in e):
            raise KeyConfigError(f"{where}: give exactly one of 'key' or 'sha256'")
        if "key" in e:
            if not isinstance(e["key"], str):
                raise KeyConfigError(f"{where}: 'key' must be a string")
            d = digest(check_secret(e["key"], where))
        else:
            if not isinstance(e["sha256"], str) or not _HEX.match(e["sha256"]):
                raise KeyConfigError(f"{where}: 'sha256' must be 64 lowercase hex digits")
            d = bytes.fromhex(e["sha256"])
        role = e.get("role", "search")
        if role not in ROLES:
            raise KeyConfigError(f"{where}: 'role' must be one of {', '.join(ROLES)}")
        idx = e.get("indexes")
        if idx is not None and (not isinstance(idx, list) or not all(isinstance(i, str) and INDEX_NAME_RE.match(i) for i in idx)):
            raise KeyConfigError(f"{where}: 'indexes' must be a list of index names")
        keys.append(ApiKey(kid, d, role, None if idx is None else frozenset(idx)))
    return keys


def load_keys(env_value: str | None = None, keys_file: str | Path | None = None) -> list[ApiKey]:
    """Every configured key; ids must be unique, digests too (one key cannot have two roles)."""
    keys = keys_from_env(env_value) + (keys_from_file(Path(keys_file)) if keys_file else [])
    ids = [k.id for k in keys]
    if len(set(ids)) != len(ids):
        raise KeyConfigError("duplicate key id in the key configuration")
    if len({k.digest for k in keys}) != len(keys):
        raise KeyConfigError("the same key is configured twice")
    return keys


def keys_from_environment() -> list[ApiKey]:
    s = settings()
    return load_keys(s.api_keys, s.keys_file)


class Authenticator:
    """Maps an ``Authorization`` header to its key, or None. With no keys configured every
    request is anonymous admin (``saedex serve`` allows that only on loopback)."""

    OPEN = ApiKey("anonymous", b"", "admin")

    def __init__(self, keys: list[ApiKey]):
        self.keys = list(keys)

    @property
    def open(self) -> bool:
        return not self.keys

    def identify(self, header: str | None) -> ApiKey | None:
        if self.open:
            return self.OPEN
        header = header or ""
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        d = digest(token)
        found = None
        for k in self.keys:  # every key, no early exit
            if hmac.compare_digest(d, k.digest) and token:
                found = k
        return found
