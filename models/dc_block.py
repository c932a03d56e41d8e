"""Choosing r of the DC blocker (jitvoc/representation.py, docs/model.md "Samples").

    python -m models.dc_block [--max-sentences N] [--r 0.99 0.995 ...]

For each held-out festvox_ru sentence (models/split.json) and each r, decoded exactly as the
engines do (float32): the PESQ-wb change the filter makes against the recording, once on the
recording itself (linear code, no pre-emphasis: the decode without a filter is the recording)
and once on its µ-law + pre-emphasis 0.85 code; and how it treats the recording with a DC step
of −100 LSB from its middle on (the offset the free-running model shows): the mean of the
filtered second half, and the samples it takes for the step's trace to stay within 5 LSB.
Prints a markdown table of the means (ΔPESQ: also the worst sentence).
"""
import argparse
import sys

import numpy as np

from jitvoc.representation import Representation, decode

STEP_LSB = -100
SETTLED_LSB = 5


def corner_hz(r, sr):
    """The −3 dB frequency of (1 − z⁻¹) / (1 − r z⁻¹)."""
    w = np.linspace(1e-5, 0.05, 200_000) * np.pi
    z = np.exp(-1j * w)
    gain = np.abs((1 - z) / (1 - r * z))
    return float(w[np.argmax(gain >= 2 ** -0.5)] * sr / (2 * np.pi))


def filtered(rep, x):
    return decode(rep, *rep.encode(x))[0]


def step_response(x, r):
    """(mean of the filtered step trace over the second half, samples until it stays within
    SETTLED_LSB) for x plus a STEP_LSB step from its middle; the trace is the difference to the
    filtered x, so speech does not enter it."""
    rep, half = Representation("linear", 0.0, r), len(x) // 2
    stepped = x.astype(np.int64)
    stepped[half:] += STEP_LSB
    trace = (filtered(rep, np.clip(stepped, -32768, 32767).astype(np.int16)).astype(np.int64)
             - filtered(rep, x))[half:]
    outside = np.flatnonzero(np.abs(trace) > SETTLED_LSB)
    return float(trace.mean()), int(outside[-1] + 1 if len(outside) else 0)


def measure(recordings, rs, sr):
    from models.evaluate import pesq_wb

    def pesq(x, y):
        p, note = pesq_wb(x, y, sr)
        if note:
            raise RuntimeError(note)
        return p

    rows = {r: [] for r in rs}
    for _, x in recordings:
        coded = Representation("mulaw", 0.85)
        p_self, p_coded = pesq(x, x), pesq(x, filtered(coded, x))
        for r in rs:
            d_self = pesq(x, filtered(Representation("linear", 0.0, r), x)) - p_self
            d_coded = pesq(x, filtered(Representation("mulaw", 0.85, r), x)) - p_coded
            rows[r].append((d_self, d_coded) + step_response(x, r))
    return rows


def table(rows, sr):
    lines = ["| r | −3 dB corner | ΔPESQ-wb recording (mean, worst) | ΔPESQ-wb µ-law 0.85 code "
             "(mean, worst) | −100 LSB step: mean after | settles within 5 LSB | n |",
             "|---|---|---|---|---|---|---|"]
    for r, v in rows.items():
        a = np.array(v)
        lines.append(f"| {r:g} | {corner_hz(r, sr):.1f} Hz | {a[:, 0].mean():+.4f}, "
                     f"{a[:, 0].min():+.4f} | {a[:, 1].mean():+.4f}, {a[:, 1].min():+.4f} | "
                     f"{a[:, 2].mean():+.2f} LSB | {a[:, 3].mean() / sr * 1000:.0f} ms "
                     f"(worst {a[:, 3].max() / sr * 1000:.0f}) | {len(a)} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-sentences", type=int, default=None)
    ap.add_argument("--r", type=float, nargs="+", default=[0.99, 0.995, 0.998, 0.999])
    args = ap.parse_args(argv)
    from models.evaluate import heldout_recordings
    from models.prepare_data import load_split
    split = load_split()
    sr = split["sample_rate"]
    recordings = list(heldout_recordings(split, "festvox_ru", args.max_sentences))
    print(table(measure(recordings, args.r, sr), sr), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
