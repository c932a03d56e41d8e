"""models/learning_curve.py reads the chain's logs: every run found, in order, scored where scored."""

from models import learning_curve


def test_the_chain_curve_reads_every_run_of_the_logs():
    rows = learning_curve.curve()
    assert [r["run"] for r in rows] == learning_curve.CHAIN
    steps = [r["step"] for r in rows]
    minutes = [r["minutes"] for r in rows]
    assert steps == sorted(steps) and minutes == sorted(minutes)
    assert all(10 < r["held_out"]["all"] < 16 for r in rows)
    scored = [r for r in rows if r["free_running"]]
    assert len(scored) >= 6  # runs 8 to 13 were sampled free-running on the GPU
    assert all(1.0 <= r["free_running"]["festvox_ru"][0] <= 4.7 for r in scored)
