"""Progress on stderr (tqdm): the one progress display of the command line and the benchmarks.
Shown only on a terminal; `enabled=False` hides it everywhere."""
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
    """A tqdm bar over `total` units on stderr (disabled when stderr is not a terminal)."""
    return _bar_class()(total=total, unit=unit, file=sys.stderr, leave=False,
                        dynamic_ncols=True, disable=None if enabled else True, **options)


class Steps:
    """A bar over named steps: `step(what)` counts one and shows what runs now."""

    def __init__(self, total: int, enabled: bool = True):
        self.bar = progress_bar(total, unit="step", enabled=enabled)

    def step(self, what: str) -> None:
        self.bar.set_description_str(what, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
