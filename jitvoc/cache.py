"""The on-disk kernel cache: where it lives, who may own it, and entries that check themselves.

Location: jitvoc.config.cache_dir (``$JITVOC_CACHE``, else the user cache folder). The folder
is created 0700 and is used only while it belongs to this user and nobody else can write to it;
an entry file must satisfy the same rule.

An entry is one file: a header naming the format, the sha256 of the key it was stored under and
the sha256 and length of its payload, then the payload. Anything that does not match exactly
(another kernel's object, a truncated or bit-flipped file, a foreign owner) is a miss, so the
caller recompiles: the cache can make loading faster, never wrong. Past MAX_BYTES the least
recently used entries are evicted. Writes go through
jitvoc.atomic (fsync, rename, cleanup on failure); a cache that cannot be written (read-only,
full, not a folder) means "compile without caching", with one warning per process.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import stat
import struct
import warnings
from pathlib import Path

from .atomic import atomic_file
from .config import cache_dir
from .errors import JitvocError

MAGIC = b"jitvoc-cache-entry-1\n"
MAX_BYTES = 1 << 30   # entries beyond this total are evicted, least recently used first
_HEADER = struct.Struct(f"<{len(MAGIC)}s32s32sQ")   # magic, key digest, payload digest, length
_warned: set = set()


class CacheWarning(UserWarning):
    """The kernel cache cannot be used (or an entry was ignored); jitvoc compiles instead."""


class CacheError(JitvocError):
    """A cache operation the user asked for (jitvoc cache clear) failed."""


def warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        warnings.warn(message, CacheWarning, stacklevel=3)


def safety_problem(st: os.stat_result) -> str | None:
    """Why a file or folder with this stat must not be trusted, or None."""
    if st.st_uid != os.getuid():
        return f"owned by uid {st.st_uid}, not by this user ({os.getuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"writable by others (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def usable_directory() -> Path | None:
    """The cache folder, created 0700 if missing; None (after one warning) if it cannot be
    created or must not be trusted."""
    path = cache_dir()
    try:
        if not path.exists():
            path.mkdir(parents=True, mode=0o700)
            path.chmod(0o700)   # mkdir's mode is filtered by the umask
        st = path.stat()
    except OSError as e:
        warn_once(f"jitvoc: kernel cache {path} cannot be created ({e}); compiling without it")
        return None
    if not stat.S_ISDIR(st.st_mode):
        warn_once(f"jitvoc: kernel cache {path} is not a folder; compiling without it")
        return None
    problem = safety_problem(st)
    if problem:
        warn_once(f"jitvoc: kernel cache {path} is {problem}; compiling without it")
        return None
    return path


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def entry_bytes(key: bytes, payload: bytes) -> bytes:
    return _HEADER.pack(MAGIC, _digest(key), _digest(payload), len(payload)) + payload


def parse_entry(data: bytes, key: bytes) -> bytes | None:
    """The payload of a stored entry if it is intact and was stored under `key`, else None."""
    return _verified(data[:_HEADER.size], data[_HEADER.size:], key)


def _verified(header: bytes, payload: bytes, key: bytes) -> bytes | None:
    """`payload` if `header` is this format's, for `key`, and matches the payload, else None."""
    if len(header) < _HEADER.size:
        return None
    magic, key_digest, payload_digest, length = _HEADER.unpack(header)
    if (magic != MAGIC or key_digest != _digest(key) or length != len(payload)
            or payload_digest != _digest(payload)):
        return None
    return payload


def read(name: str, key: bytes) -> bytes | None:
    """The payload stored as `name` under `key`, or None (a miss) for anything else."""
    folder = usable_directory()
    if folder is None:
        return None
    path = folder / name
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            problem = safety_problem(st) if stat.S_ISREG(st.st_mode) else "not a regular file"
            if problem:
                warn_once(f"jitvoc: ignoring cache entry {path}: {problem}")
                return None
            # header and payload read apart: the payload (MBs for a model) is not copied again
            header, payload = f.read(_HEADER.size), f.read()
    except FileNotFoundError:
        return None
    except OSError as e:
        warn_once(f"jitvoc: ignoring unreadable cache entry {path}: {e}")
        return None
    payload = _verified(header, payload, key)
    if payload is not None:
        _touch(path)
    return payload


def _touch(path: Path) -> None:
    """Mark an entry used now (eviction goes by modification time)."""
    try:
        os.utime(path)
    except OSError:
        pass   # a read-only cache still serves hits; it just cannot record them


def write(name: str, key: bytes, payload: bytes) -> None:
    """Store `payload` as `name` under `key`; a failure is one warning, never an error."""
    folder = usable_directory()
    if folder is None:
        return
    try:
        # no fsync (8 in a cold jitvoc.load, 35 ms of CPU): every entry is verified when read,
        # so one a crash left incomplete is a miss
        with atomic_file(folder / name, CacheError, mode=0o600, sync=False) as f:
            f.write(entry_bytes(key, payload))
        evict(folder, keep=name)
    except (CacheError, OSError) as e:
        warn_once(f"jitvoc: not caching compiled code: {e}")


def evict(folder: Path, keep: str) -> None:
    """Delete the least recently used entries (not `keep`) until the total is MAX_BYTES."""
    entries = []
    for p in folder.iterdir():
        with contextlib.suppress(FileNotFoundError):   # another process may evict too
            st = p.lstat()
            if stat.S_ISREG(st.st_mode) and not p.name.endswith(".lock"):
                entries.append((st.st_mtime, st.st_size, p))
    total = sum(size for _, size, _ in entries)
    for _, size, p in sorted(entries, key=lambda e: e[0]):
        if total <= MAX_BYTES:
            break
        if p.name != keep:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
            total -= size


@contextlib.contextmanager
def locked(name: str):
    """An exclusive lock (flock on `name`.lock in the cache folder) for read-modify-write of
    a shared entry; without a usable cache folder, nothing to lock."""
    folder = usable_directory()
    if folder is None:
        yield
        return
    try:
        fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as e:
        warn_once(f"jitvoc: cannot lock {folder / name} ({e}); compiling without the cache")
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def info() -> dict:
    """What `jitvoc cache info` shows."""
    path = cache_dir()
    files = [p for p in path.iterdir() if p.is_file()] if path.is_dir() else []
    return {"path": str(path), "exists": path.is_dir(), "entries": len(files),
            "bytes": sum(p.stat().st_size for p in files),
            "problem": safety_problem(path.stat()) if path.is_dir() else None}


def clear() -> int:
    """Remove the cache folder's entries; returns how many files went."""
    path = cache_dir()
    if not path.is_dir():
        return 0
    problem = safety_problem(path.stat())
    if problem:
        raise CacheError(f"refusing to clear {path}: it is {problem}")
    count = 0
    try:
        for p in path.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            count += 1
    except OSError as e:
        raise CacheError(f"cannot clear {path}: {e}") from None
    return count
