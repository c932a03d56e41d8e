"""Atomic file output: a temporary file beside the target replaces it only once complete, so an
error or Ctrl-C never leaves a half-written file."""
import contextlib
import os
import uuid


@contextlib.contextmanager
def atomic_file(path, error_class):
    """Yield a binary file to write; on success it becomes `path`. An OSError is re-raised as
    `error_class` naming the file; the temporary file is removed on any failure."""
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)),
                       f".{os.path.basename(path)}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "xb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise error_class(f"cannot write {path}: {e}") from e
        raise
