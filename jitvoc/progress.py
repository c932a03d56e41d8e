"""Progress on stderr (tqdm): the one progress display of the command line and the benchmarks.
Shown only on a terminal; `enabled=False` hides it everywhere."""
import sys


def progress_bar(total: int, unit: str = "it", enabled: bool = True, **options):
    """A tqdm bar over `total` units on stderr (disabled when stderr is not a terminal)."""
    from tqdm import tqdm
    return tqdm(total=total, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                disable=None if enabled else True, **options)


class Steps:
    """A bar over named steps: `step(what)` counts one and shows what runs now."""

    def __init__(self, total: int, enabled: bool = True):
        self.bar = progress_bar(total, unit="step", enabled=enabled)

    def step(self, what: str) -> None:
        self.bar.set_description_str(what, refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
