"""The quantization-only ceiling of each sample representation (jitvoc/representation.py).

    python -m models.representation_ceiling [--asterisk] [--max-sentences N]

For each held-out festvox-ru sentence (models/split.json "test") and each representation: encode
the recording, keep only the coarse byte (the fine byte set to 128, the middle of its segment),
decode exactly as the engines do (float32 de-emphasis, rint), and score PESQ-wb and STOI against
the recording. The full code (coarse and fine) is decoded and scored too, as a check that the
representation itself loses nothing audible. A perfect coarse softmax gives the "coarse only"
score; everything above it must come from the fine softmax.

With --asterisk, also the held-out prompts of the Asterisk voices (the last 5% of each voice's
sorted file list, G.722 decoded to 16 kHz). Prints markdown tables of the means.
"""
import argparse
import glob
import math
import os
import sys

import numpy as np

from jitvoc.representation import Representation, decode

REPRESENTATIONS = [Representation("linear"), Representation("linear", 0.85),
                   Representation("mulaw"), Representation("mulaw", 0.85),
                   Representation("mulaw", 0.9)]
FINE_MID = 128
ASTERISK = "/usr/share/asterisk/sounds"
ASTERISK_VOICES = ("ru_RU_f_IvrvoiceRU", "fr_CA_f_June", "es_MX_f_Allison", "it_IT_m_Carlo",
                   "en_US_f_Allison")
HELD_OUT_FRACTION = 0.05
SR = 16000
MIN_SECONDS = 1.0   # PESQ and STOI need a second or so of speech


def label(rep):
    return f"{rep.code}" + (f" + pre-emphasis {rep.preemphasis:g}" if rep.preemphasis else "")


def quantized(rep, x, coarse_only):
    c, f = rep.encode(x)
    if coarse_only:
        f = np.full_like(f, FINE_MID)
    return decode(rep, c, f)[0]


def festvox_sentences(max_sentences):
    from models.prepare_data import load_split, read_wav_int16
    split = load_split()
    names = split["test"][:max_sentences]
    for name in names:
        x, sr = read_wav_int16(os.path.join(split["wav_dir"], name + ".wav"))
        assert sr == SR, (name, sr)
        yield x


def asterisk_prompts(voice):
    """The held-out prompts of one voice: the last 5% of its sorted .g722 files."""
    import G722
    root = os.path.join(ASTERISK, voice)
    files = sorted(os.path.relpath(p, root)
                   for p in glob.glob(os.path.join(root, "**", "*.g722"), recursive=True))
    for rel in files[len(files) - math.ceil(HELD_OUT_FRACTION * len(files)):]:
        with open(os.path.join(root, rel), "rb") as fh:
            yield np.asarray(G722.G722(SR, 64000).decode(fh.read()), np.int16)


def scores(signals, reps):
    """{(label, part): (mean PESQ-wb, mean STOI, count)} over the signals long enough for PESQ
    (at least MIN_SECONDS; shorter prompts are skipped)."""
    from models.evaluate import pesq_wb, stoi
    acc = {}
    for x in signals:
        if len(x) < MIN_SECONDS * SR:
            continue
        for rep in reps:
            for part in ("coarse only", "coarse + fine"):
                y = quantized(rep, x, part == "coarse only")
                p, note = pesq_wb(x, y, SR)
                if note:
                    raise RuntimeError(note)
                acc.setdefault((label(rep), part), []).append((p, stoi(x, y, SR)[0]))
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
    print(table("festvox-ru, held-out sentences (models/split.json)",
                scores(festvox_sentences(args.max_sentences), REPRESENTATIONS)), flush=True)
    if args.asterisk:
        for voice in ASTERISK_VOICES:
            print(table(f"Asterisk {voice}, last {HELD_OUT_FRACTION:.0%} of its prompts",
                        scores(asterisk_prompts(voice), [Representation("mulaw", 0.85)])),
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
