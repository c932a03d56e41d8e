"""The emitted IR of every golden case equals tests/golden/<case>.ll.gz (see tests/golden)."""
import difflib

import pytest

import golden


@pytest.mark.parametrize("name", golden.names())
def test_ir_matches_golden(name):
    want, got = golden.stored(name), golden.emitted(name)
    assert want is not None, f"no golden IR for {name}: run python -m tests.golden --update"
    if got != want:
        diff = difflib.unified_diff(want.splitlines(), got.splitlines(), "golden", "emitted",
                                    lineterm="", n=1)
        pytest.fail(f"the IR of {name} changed (python -m tests.golden --update if intended):\n"
                    + "\n".join(list(diff)[:40]))
