"""Score the free-running samples that models/train.py --free-running saved, against the held-out
recordings they imitate, per voice: PESQ-wb, STOI and the DC offset (mean sample, int16 units).

    python -m models.score_free_running RUN.npz [OTHER.npz ...] [--eval-shard .traindata/heldout.flac]

Several files (the chain and a variant of a side-by-side run) are scored on the same
recordings, one column group each. The samples come from PyTorch's sampler, not jitvoc's engine:
this tracks the training, models.evaluate scores an exported model.
"""
import argparse
import sys

import numpy as np

from models.evaluate import pesq_wb, stoi
from models.train import read_shard

def score(path, recordings):
    """voice -> {"pesq_wb", "stoi", "dc"} means over the recordings in `path`, and the step."""
    z = np.load(path, allow_pickle=False)
    sr = int(z["sample_rate"])
    per_voice = {}
    for voice, name, x in recordings:
        y = z[f"{voice}/{name}"]
        ref = x[:len(y)]
        p, _ = pesq_wb(ref, y, sr)
        s, _ = stoi(ref, y, sr)
        for key in (voice, "all"):
            per_voice.setdefault(key, []).append((p, s, float(y.mean())))
    means = {}
    for voice, rows in per_voice.items():
        cols = list(zip(*rows))
        means[voice] = {k: float(np.mean([v for v in col if v is not None] or [np.nan]))
                        for k, col in zip(("pesq_wb", "stoi", "dc"), cols)}
        means[voice]["max_abs_dc"] = float(np.max(np.abs(cols[2])))
    return means, int(z["step"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--eval-shard", default=".traindata/heldout.flac")
    args = ap.parse_args(argv)
    recordings = read_shard(args.eval_shard)
    results = [(path, *score(path, recordings)) for path in args.runs]
    head = " | ".join(f"{path} (step {step}) PESQ-wb / STOI / DC (max)" for path, _, step in results)
    print(f"| voice | {head} |")
    print("|---|" + "---|" * len(results))
    for voice in results[0][1]:
        cells = [f"{m[voice]['pesq_wb']:.2f} / {m[voice]['stoi']:.3f} / {m[voice]['dc']:+.0f} "
                 f"({m[voice]['max_abs_dc']:.0f})" for _, m, _ in results]
        print(f"| {voice} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
