"""Atomic file output: a temporary file beside the target replaces it only once complete and
flushed to disk, so an error, a signal or a crash never leaves a half-written file."""
import contextlib
import os


@contextlib.contextmanager
def atomic_file(path, error_class, mode=None, sync=True):
    """Yield a binary file to write; on success it becomes `path`. An OSError is re-raised as
    `error_class` naming the file; the temporary file is removed on any failure. `mode`: the
    file's permission bits regardless of the umask (default: 0666 less the umask). `sync`:
    flush it to disk before the rename (False: only for files whose reader verifies them, for
    which a crash may leave an empty or partial file)."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.{os.urandom(4).hex()}.tmp")
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        created = True
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if created:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, OSError):
            raise error_class(f"cannot write {path}: {e}") from e
        raise
