"""How much quality does free running lose against the model's own one-step predictions?

    python -m models.exposure_gap MODEL [--sentences 8 --seconds 3 --dtype float32]

For held-out festvox-ru sentences (first seconds), PESQ-wb / STOI of the model's output when
every step sees the true past (teacher forcing) against the same model running free:

* `free running`: `Vocoder.synthesize`, seed 0 (what users get);
* `one step, drawn`: at each t, c_t drawn from P(c_t | true past) and f_t from P(f_t | true c_t,
  true past) (the fine draw sees the true coarse byte, as in training);
* `one step, likeliest coarse`: argmax of P(c_t | true past), with the true fine byte;
* `true coarse, fine middle`: the representation's own ceiling (models/representation_ceiling.py).

A large gap between `one step, drawn` and `free running` is exposure bias (the model does not
recover from its own errors); a low `one step, drawn` means the per-step distribution itself is too
broad (conditioning or capacity).
"""
import argparse
import os

import numpy as np
import soundfile as sf

import jitvoc
from jitvoc.representation import decode
from models.evaluate import pesq_wb, stoi
from models.prepare_data import FESTVOX_DIR, heldout, load_split


def draw(p, rng) -> np.ndarray:
    """One class per row of probabilities p [T, 256] (inverse CDF of a uniform draw)."""
    cdf = np.cumsum(p.astype(np.float64), axis=1)
    u = rng.random(len(p)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), p.shape[1] - 1)


def one_step_outputs(voc, x, mel, rng) -> dict:
    """int16 audio per teacher-forced rule for recording x."""
    rep = voc.model.representation
    p = voc.teacher_forced(x, mel)
    c, f = rep.encode(x)
    middle = np.full_like(f, 128)
    codes = {"one step, drawn": (draw(p[:, 0], rng), draw(p[:, 1], rng)),
             "one step, likeliest coarse": (p[:, 0].argmax(axis=1), f),
             "true coarse, fine middle": (c, middle)}
    return {name: decode(rep, cc, ff)[0] for name, (cc, ff) in codes.items()}


def measure(voc, sentences, seconds) -> dict:
    """{rule: ([PESQ-wb], [STOI])} over the sentences."""
    rng = np.random.default_rng(0)
    scores = {}
    for name in sentences:
        x, sr = sf.read(os.path.join(FESTVOX_DIR, name + ".wav"), dtype="int16")
        x = x[: int(seconds * sr)]
        mel = jitvoc.mel_spectrogram(x, voc.model.sample_rate, voc.model.mel_config)
        outputs = {"free running": voc.synthesize(mel, seed=0)[: len(x)]}
        outputs.update(one_step_outputs(voc, x, mel, rng))
        for rule, y in outputs.items():
            pesq, intel = scores.setdefault(rule, ([], []))
            pesq.append(pesq_wb(x, y, sr)[0])
            intel.append(stoi(x, y, sr)[0])
    return scores


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--sentences", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--dtype", default="float32")
    args = ap.parse_args(argv)
    voc = jitvoc.load(args.model, dtype=args.dtype)
    sentences = heldout(load_split(), "festvox_ru")[: args.sentences]
    print(f"{args.model} ({args.dtype}): {len(sentences)} held-out festvox_ru sentences, "
          f"first {args.seconds:g} s")
    print("| output | PESQ-wb | STOI |\n|---|---|---|")
    for rule, (pesq, intel) in measure(voc, sentences, args.seconds).items():
        print(f"| {rule} | {np.mean(pesq):.2f} | {np.mean(intel):.3f} |")


if __name__ == "__main__":
    main()
