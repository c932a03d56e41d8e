"""Would another sampling rule sound better? Free-running PESQ-wb / STOI of an exported model on
held-out festvox-ru sentences, with the coarse and fine logits transformed before the draw.

    python -m models.sampling_rule MODEL.npz base Tc=0.8 Tc=0.7 thc=0.005 [--sentences 4 --seconds 3]

A rule is a comma-separated list of Tc / Tf (temperature of the coarse / fine softmax) and
thc / thf (LPCNet's threshold: p' = max(p − th, 0), renormalised); "base" is the model's own
rule. It runs the float32 NumPy reference engine (R as a SciPy sparse matrix, about 4 ms a
sample) with its draw wrapped, seeds 0 and 1: an experiment on the semantics, not the engine.
"""
import argparse
import os

import numpy as np
import scipy.sparse
import soundfile as sf

import jitvoc
import jitvoc.reference.vocoder as reference
from models.evaluate import pesq_wb, stoi
from models.prepare_data import FESTVOX_DIR, heldout, load_split


def parse_rule(text) -> dict:
    if text == "base":
        return {}
    rule = dict((k, float(v)) for k, v in (item.split("=") for item in text.split(",")))
    unknown = set(rule) - {"Tc", "Tf", "thc", "thf"}
    if unknown:
        raise SystemExit(f"unknown rule parameters {sorted(unknown)}")
    return rule


def transform(logits, rule, half) -> np.ndarray:
    logits = np.asarray(logits, np.float32) / np.float32(rule.get("T" + half, 1.0))
    th = rule.get("th" + half)
    if th:
        p = np.exp(logits - logits.max())
        p = np.maximum(p / p.sum() - np.float32(th), 0)
        logits = np.log(np.maximum(p, 1e-30)).astype(np.float32)
    return logits


def with_rule(rule):
    """The reference's draw with `rule` applied; its calls alternate coarse, fine."""
    draw, calls = reference.draw, [0]

    def ruled(logits, xi):
        half = "cf"[calls[0] % 2]
        calls[0] += 1
        return draw(transform(logits, rule, half), xi)
    return ruled, calls


def score(voc, rule, sentences, seconds) -> tuple:
    draw, calls = with_rule(rule)
    original, reference.draw = reference.draw, draw
    try:
        pesq, intel = [], []
        for name in sentences:
            x, sr = sf.read(os.path.join(FESTVOX_DIR, name + ".wav"), dtype="int16")
            x = x[: int(seconds * sr)]
            mel = jitvoc.mel_spectrogram(x, voc.model.sample_rate, voc.model.mel_config)
            for seed in (0, 1):
                calls[0] = 0
                y = voc.synthesize(mel, seed=seed)[: len(x)]
                pesq.append(pesq_wb(x, y, sr)[0])
                intel.append(stoi(x, y, sr)[0])
        return pesq, intel
    finally:
        reference.draw = original


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("rules", nargs="+")
    ap.add_argument("--sentences", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args(argv)
    voc = jitvoc.load(args.model, engine=reference.ReferenceEngine)
    voc._engine._R = scipy.sparse.csr_matrix(voc._engine._R)
    sentences = heldout(load_split(), "festvox_ru")[: args.sentences]
    print(f"{args.model}: {', '.join(sentences)}, first {args.seconds:g} s, seeds 0 and 1")
    for text in args.rules:
        pesq, intel = score(voc, parse_rule(text), sentences, args.seconds)
        print(f"{text:24s} PESQ-wb {np.mean(pesq):.3f} STOI {np.mean(intel):.3f}  "
              f"per run {np.round(pesq, 2).tolist()}", flush=True)


if __name__ == "__main__":
    main()
