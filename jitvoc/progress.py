"""Progress on stderr (tqdm): the one progress display of the command line and the benchmarks.
Shown only on a terminal; `enabled=False` hides it everywhere. tqdm is imported only for a bar
that is shown (its import, importlib.metadata and email included, took ~8 ms of a command's
CPU time)."""
import functools
import sys


@functools.lru_cache(maxsize=None)
def _bar_class():
    """tqdm without its monitor thread (tqdm's own bars keep theirs): a corpus run forks its
    workers while its bar is up, and a process with a second thread is not safe to fork. Each
    update redraws the bar (within mininterval) anyway."""
    from tqdm import tqdm

    class Bar(tqdm):
        monitor_interval = 0
    return Bar


def progress_bar(total: int, unit: str = "it", enabled: bool = True, **options):
    """A tqdm bar over `total` units on stderr; a bar that shows nothing when stderr is not a
    terminal or `enabled` is false."""
    if not (enabled and _terminal()):
        return _Hidden()
    return _bar_class()(total=total, unit=unit, file=sys.stderr, leave=False,
                        dynamic_ncols=True, **options)


def _terminal() -> bool:
    """Whether stderr is a terminal (as tqdm's disable=None decides)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):   # no stderr, or a closed one
        return False


class _Hidden:
    """What a tqdm bar with disable=True does: nothing, with the calls jitvoc makes."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n=1) -> None:
        pass

    def set_description_str(self, desc=None, refresh=True) -> None:
        pass

    def set_postfix_str(self, s="", refresh=True) -> None:
        pass

    def close(self) -> None:
        pass


class Steps:
    """A bar over named steps: `step(what)` counts one and shows what runs now."""

    def __init__(self, total: int, enabled: bool = True):
        self.bar = progress_bar(total, unit="step", enabled=enabled)

    def step(self, what: str) -> None:
        self.bar.set_description_str(what, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
