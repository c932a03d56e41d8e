"""BLAS thread control (threadpoolctl): the one place jitvoc limits NumPy's BLAS threads."""
import contextlib
import functools


@functools.lru_cache(maxsize=None)
def _controller():
    from threadpoolctl import ThreadpoolController
    return ThreadpoolController()   # finds the loaded BLAS libraries once


@contextlib.contextmanager
def blas_threads(n: int):
    """At most `n` BLAS threads inside the block; the previous limits are restored after."""
    with _controller().limit(limits=n, user_api="blas"):
        yield


def thread_counts() -> list[int]:
    """The current thread count of each loaded BLAS library."""
    return [lib.num_threads for lib in _controller().select(user_api="blas").lib_controllers]
