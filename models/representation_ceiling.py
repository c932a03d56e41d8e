"""The quantization-only ceiling of each sample representation (jitvoc/representation.py).

    python -m models.representation_ceiling [--asterisk] [--max-sentences N]

For each held-out festvox_ru sentence (models/split.json) and each representation: encode
the recording, keep only the coarse byte (the fine byte set to 128, the middle of its segment),
decode exactly as the engines do (float32 de-emphasis, rint), and score PESQ-wb and STOI against
the recording. The full code (coarse and fine) is decoded and scored too, as a check that the
representation itself loses nothing audible. A perfect coarse softmax gives the "coarse only"
score; everything above it must come from the fine softmax.

With --asterisk, also the held-out prompts of the other voices of models/split.json (the Asterisk
voices, G.722 decoded to 16 kHz; asterisk_en is evaluation-only), µ-law + pre-emphasis 0.85
only. Recordings shorter than 1 s are skipped (models.evaluate.heldout_recordings). Prints
markdown tables of the means.
"""
import argparse
import sys

import numpy as np

from jitvoc.representation import Representation, decode

REPRESENTATIONS = [Representation("linear"), Representation("linear", 0.85),
                   Representation("mulaw"), Representation("mulaw", 0.85),
                   Representation("mulaw", 0.9)]
FINE_MID = 128
FESTVOX = "festvox_ru"


def label(rep):
    return f"{rep.code}" + (f" + pre-emphasis {rep.preemphasis:g}" if rep.preemphasis else "")


def quantized(rep, x, coarse_only):
    c, f = rep.encode(x)
    if coarse_only:
        f = np.full_like(f, FINE_MID)
    return decode(rep, c, f)[0]


def scores(recordings, reps, sr):
    """{(label, part): (mean PESQ-wb, mean STOI, count)} over (name, int16 audio) recordings."""
    from models.evaluate import pesq_wb, stoi
    acc = {}
    for _, x in recordings:
        for rep in reps:
            for part in ("coarse only", "coarse + fine"):
                y = quantized(rep, x, part == "coarse only")
                p, note = pesq_wb(x, y, sr)
                if note:
                    raise RuntimeError(note)
                acc.setdefault((label(rep), part), []).append((p, stoi(x, y, sr)[0]))
    return {key: (float(np.mean([p for p, _ in v])), float(np.mean([s for _, s in v])), len(v))
            for key, v in acc.items()}


def table(title, results):
    lines = [f"### {title}", "", "| representation | part | PESQ-wb | STOI | n |",
             "|---|---|---|---|---|"]
    for (name, part), (p, s, n) in results.items():
        lines.append(f"| {name} | {part} | {p:.2f} | {s:.3f} | {n} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-sentences", type=int, default=None)
    ap.add_argument("--asterisk", action="store_true",
                    help="also the held-out Asterisk prompts, µ-law + pre-emphasis 0.85 only")
    args = ap.parse_args(argv)
    from models.evaluate import heldout_recordings
    from models.prepare_data import load_split
    split = load_split()
    voices = list(split["voices"]) if args.asterisk else [FESTVOX]
    for voice in voices:
        reps = REPRESENTATIONS if voice == FESTVOX else [Representation("mulaw", 0.85)]
        recordings = heldout_recordings(split, voice, args.max_sentences)
        print(table(f"{voice}, held-out recordings (models/split.json)",
                    scores(recordings, reps, split["sample_rate"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
