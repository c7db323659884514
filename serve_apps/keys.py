"""API keys of the HTTP API: created and revoked by ``sentinel keys``, checked by the server on every request.

A key reads ``msk_<id>_<secret>``: ``id`` is 8 hex characters naming the key's record, ``secret`` 32 random bytes
in URL-safe base64 (43 characters). The plaintext is shown once, when the key is created; the store keeps only a
per-key random salt and the HMAC-SHA256 of the key under that salt, in a JSON file readable by its owner alone
(mode 0600), replaced atomically on every change.

:meth:`KeyStore.verify` runs per request: it keeps the parsed file in memory and reads it again only when the
file changed (inode, mtime in ns or size), so a key revoked from the command line in another process stops
working on the next request, without a restart.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> store = KeyStore(Path(tempfile.mkdtemp()) / "api_keys.json")
>>> record, key = store.create("dashboard")
>>> store.verify(key) == record
True
>>> store.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
True
>>> store.revoke(record.id).revoked is not None
True
>>> store.verify(key) is None
True
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = ["KEY_PREFIX", "KeyRecord", "KeyStore"]

#: What every key starts with ("market sentinel key"), so a leaked one is easy to recognise and grep for.
KEY_PREFIX = "msk_"
_ID_HEX = 8
_SECRET_BYTES = 32
_SECRET_CHARS = 43  # URL-safe base64 of 32 bytes, padding stripped
_KEY_LEN = len(KEY_PREFIX) + _ID_HEX + 1 + _SECRET_CHARS
_KEY_RE = re.compile(rf"{KEY_PREFIX}([0-9a-f]{{{_ID_HEX}}})_[A-Za-z0-9_-]{{{_SECRET_CHARS}}}", re.ASCII)
_ID_RE = re.compile(rf"[0-9a-f]{{{_ID_HEX}}}", re.ASCII)
_DIGEST_RE = re.compile(r"[0-9a-f]{64}", re.ASCII)
_SALT_BYTES = 16
_PREFIX_CHARS = 12
_NAME_MAX = 64
_FILE_VERSION = 1
_FILE_NAME = "api_keys.json"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _digest(salt: bytes, key: str) -> str:
    return hmac.new(salt, key.encode("ascii"), hashlib.sha256).hexdigest()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not 1 <= len(name) <= _NAME_MAX or not name.isprintable() or not name.strip():
        raise ValueError(f"name={name!r}: must be 1-{_NAME_MAX} printable characters, not all blank")
    return name


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What is known about an API key, without the key.

    Attributes
    ----------
    id : str
        8 lowercase hex characters; part of the key, so a presented key names its record.
    name : str
        Who or what the key is for (1-64 printable characters).
    created : str
        When the key was created, ISO-8601 in UTC to the second (``2024-05-01T12:00:00+00:00``).
    revoked : str or None
        When the key was revoked, ISO-8601 in UTC; ``None`` while it is valid.
    prefix : str
        The first 12 characters of the key (``msk_<id>``), to recognise it in a list.
    """

    id: str
    name: str
    created: str
    revoked: str | None
    prefix: str

    @property
    def active(self) -> bool:
        """Whether the key is still accepted (not revoked)."""
        return self.revoked is None


@dataclass(frozen=True, slots=True)
class _Entry:
    record: KeyRecord
    salt: bytes
    digest: str


# (inode, mtime in ns, size) of the file the entries were read from; None when there was no file
_Signature = tuple[int, int, int] | None


class KeyStore:
    """API key records in a JSON file: create, list, revoke and verify keys.

    Parameters
    ----------
    path : Path
        The JSON file. It and its parent directory are created by the first :meth:`create`; a missing file is an
        empty store.
    clock : callable returning datetime, optional
        The current time, timezone-aware (UTC by default); tests pass a fixed one.

    Notes
    -----
    Changes (:meth:`create`, :meth:`revoke`) read the file again first, so a change made by another process is
    kept, but two processes changing the store at the same instant may lose one change. A file that is not a key
    store (bad JSON, missing or malformed fields) raises ``ValueError`` naming the file: a corrupt key store is
    not treated as an empty one.
    """

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = _utc_now) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._signature: _Signature = None
        self._loaded = False
        # an unknown id is hashed against this salt, so that answering takes as long as for a known one
        self._dummy_salt = secrets.token_bytes(_SALT_BYTES)

    @classmethod
    def default(cls, data_dir: Path) -> KeyStore:
        """The store of a data directory: ``data_dir / "api_keys.json"``.

        Parameters
        ----------
        data_dir : Path
            The data directory (:attr:`cluster.config.Settings.data_dir`).

        Returns
        -------
        KeyStore
        """
        return cls(Path(data_dir) / _FILE_NAME)

    def __repr__(self) -> str:
        return f"KeyStore(path={str(self.path)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # the lock and the cache stay behind: the copy reads the file again
        return (type(self), (self.path,), {"_clock": self._clock})

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._clock = state["_clock"]

    # -- public API ---------------------------------------------------------------------------------------------

    def create(self, name: str) -> tuple[KeyRecord, str]:
        """Create a key.

        Parameters
        ----------
        name : str
            Who or what the key is for, 1-64 printable characters.

        Returns
        -------
        record : KeyRecord
            The new key's record.
        key : str
            The key in plain text, ``msk_<id>_<secret>``. It is not stored and cannot be shown again.

        Raises
        ------
        ValueError
            When the name is empty, longer than 64 characters or holds unprintable characters.
        """
        _check_name(name)
        with self._lock:
            entries = dict(self._refresh(force=True))
            key_id = secrets.token_hex(_ID_HEX // 2)
            while key_id in entries:
                key_id = secrets.token_hex(_ID_HEX // 2)
            key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(_SECRET_BYTES)}"
            salt = secrets.token_bytes(_SALT_BYTES)
            record = KeyRecord(id=key_id, name=name, created=self._now(), revoked=None, prefix=key[:_PREFIX_CHARS])
            entries[key_id] = _Entry(record, salt, _digest(salt, key))
            self._write(entries)
        return record, key

    def list(self) -> builtins.list[KeyRecord]:
        """All keys, revoked ones included, oldest first.

        Returns
        -------
        list of KeyRecord
        """
        with self._lock:
            entries = self._refresh()
        # the file keeps creation order, which the stable sort keeps for keys created in the same second
        return sorted((e.record for e in entries.values()), key=lambda r: r.created)

    def revoke(self, key_id: str) -> KeyRecord:
        """Revoke a key: :meth:`verify` refuses it from the next call on, in every process.

        Parameters
        ----------
        key_id : str
            The key's id (8 hex characters, as :meth:`list` shows).

        Returns
        -------
        KeyRecord
            The revoked record. Revoking a revoked key changes nothing and returns the first revocation time.

        Raises
        ------
        KeyError
            When no key has this id; the message names it.
        """
        with self._lock:
            entries = dict(self._refresh(force=True))
            entry = entries.get(key_id) if isinstance(key_id, str) else None
            if entry is None:
                raise KeyError(f"key_id={key_id!r}: no such API key in {self.path}")
            if entry.record.revoked is not None:
                return entry.record
            record = replace(entry.record, revoked=self._now())
            entries[key_id] = replace(entry, record=record)
            self._write(entries)
        return record

    def verify(self, presented: str) -> KeyRecord | None:
        """The record of a valid key; ``None`` for anything else.

        Parameters
        ----------
        presented : str
            What the client sent, e.g. the bearer token.

        Returns
        -------
        KeyRecord or None
            ``None`` when the string is not a key, names no known key, does not match, or the key is revoked.
            The digests are compared in constant time, and an unknown id is hashed too, so that the time taken
            does not tell which ids exist.
        """
        if not isinstance(presented, str) or len(presented) != _KEY_LEN:
            return None
        match = _KEY_RE.fullmatch(presented)
        if match is None:
            return None
        with self._lock:
            entries = self._refresh()
        entry = entries.get(match.group(1))
        if entry is None:
            hmac.compare_digest(_digest(self._dummy_salt, presented), "0" * 64)
            return None
        if not hmac.compare_digest(_digest(entry.salt, presented), entry.digest):
            return None
        return entry.record if entry.record.revoked is None else None

    # -- file ---------------------------------------------------------------------------------------------------

    def _now(self) -> str:
        now = self._clock()
        if now.tzinfo is None:
            raise ValueError(f"clock()={now!r}: must be timezone-aware")
        return now.astimezone(UTC).isoformat(timespec="seconds")

    def _refresh(self, *, force: bool = False) -> dict[str, _Entry]:
        """The entries, read again when the file changed since the last read (or always with ``force``)."""
        try:
            st = os.stat(self.path)
            signature: _Signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            signature = None
        if force or not self._loaded or signature != self._signature:
            self._entries, self._signature = self._read()
            self._loaded = True
        return self._entries

    def _read(self) -> tuple[dict[str, _Entry], _Signature]:
        try:
            with open(self.path, encoding="utf-8") as f:
                st = os.fstat(f.fileno())
                text = f.read()
        except FileNotFoundError:
            return {}, None
        try:
            doc = json.loads(text)
            entries = self._parse(doc)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{self.path}: not a valid API key store ({exc})") from exc
        return entries, (st.st_ino, st.st_mtime_ns, st.st_size)

    @staticmethod
    def _parse(doc: Any) -> dict[str, _Entry]:
        if not isinstance(doc, dict) or doc.get("version") != _FILE_VERSION or not isinstance(doc.get("keys"), list):
            raise ValueError(f"expected {{'version': {_FILE_VERSION}, 'keys': [...]}}")
        entries: dict[str, _Entry] = {}
        for i, item in enumerate(doc["keys"]):
            if not isinstance(item, dict):
                raise ValueError(f"keys[{i}]={item!r}: not an object")
            key_id, revoked = item["id"], item["revoked"]
            if not isinstance(key_id, str) or not _ID_RE.fullmatch(key_id) or key_id in entries:
                raise ValueError(f"keys[{i}].id={key_id!r}: not 8 hex characters, or repeated")
            if not isinstance(item["digest"], str) or not _DIGEST_RE.fullmatch(item["digest"]):
                raise ValueError(f"keys[{i}].digest: not a SHA-256 hex digest")
            if not all(isinstance(item[f], str) for f in ("name", "created", "prefix", "salt")) or not (
                revoked is None or isinstance(revoked, str)
            ):
                raise ValueError(f"keys[{i}]: name, created, prefix and salt must be strings, revoked a string or null")
            record = KeyRecord(
                id=key_id, name=item["name"], created=item["created"], revoked=revoked, prefix=item["prefix"]
            )
            entries[key_id] = _Entry(record, bytes.fromhex(item["salt"]), item["digest"])
        return entries

    def _write(self, entries: dict[str, _Entry]) -> None:
        """Replace the file atomically: a temporary file (mode 0600) in the same directory, then ``os.replace``."""
        doc = {
            "version": _FILE_VERSION,
            "keys": [
                {
                    "id": e.record.id,
                    "name": e.record.name,
                    "created": e.record.created,
                    "revoked": e.record.revoked,
                    "prefix": e.record.prefix,
                    "salt": e.salt.hex(),
                    "digest": e.digest,
                }
                for e in entries.values()
            ],
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                os.fchmod(f.fileno(), 0o600)
                json.dump(doc, f, indent=1)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self._entries = entries
        st = os.stat(self.path)
        self._signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._loaded = True
