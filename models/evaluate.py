"""Quality report of a jitvoc model on the held-out sentences of models/split.json.

    python -m models.evaluate models/festvox_ru_wavernn.npz --backend jit --dtype int8 \
        --max-sentences 4 --out eval_out

For each held-out sentence (the original recording, untrimmed): the log-mel
(`jitvoc.mel_spectrogram`), synthesis with `jitvoc.load(model, dtype=..., backend=...)`, and

* PESQ wide band (ITU-T P.862.2, package `pesq`, 16 kHz) and STOI (package `pystoi`), synthesis
  against the recording;
* MCD, mel-cepstral distortion in dB: cepstra c_1..c_24 are the orthonormal DCT-II of the
  natural-log mel spectrogram (jitvoc.mel_spectrogram, 80 bands) of each signal, c_0 (energy)
  left out; MCD = (10 / ln 10) · sqrt(2 · Σ_d (c_d − ĉ_d)²), averaged over the frames where the
  recording is within 40 dB of its loudest frame. The vocoder is time-aligned with its mel, so
  frames are compared one to one (no DTW). This is NOT the SPTK mcep-based MCD: compare numbers
  only with this script;
* teacher-forced NLL in bits per 16-bit sample (−log2 P(c_t) − log2 P(f_t) given the true past,
  the recording encoded with the model's representation, `Vocoder.teacher_forced`; with
  --nll-seconds only the first seconds of each sentence, since the reference backend is slow);
* a PNG with the log-mel spectrograms of recording and synthesis (matplotlib), and the
  synthesized WAVs.

Writes <out>/report.json and prints a table. Metrics whose package is missing are reported as
null with the reason.
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def mel_cepstra(mel, n=25):
    """Orthonormal DCT-II of log-mel frames [F, n_mels] -> [F, n] (c_0 .. c_{n-1})."""
    from scipy.fft import dct
    return dct(np.asarray(mel, np.float64), type=2, norm="ortho", axis=1)[:, :n]


def mcd_db(ref_mel, syn_mel, ref_audio, hop, threshold_db=40.0):
    F = min(len(ref_mel), len(syn_mel))
    a, b = mel_cepstra(ref_mel[:F]), mel_cepstra(syn_mel[:F])
    x = np.asarray(ref_audio, np.float64)[:F * hop]
    x = np.pad(x, (0, F * hop - len(x)))
    e = 10 * np.log10((x.reshape(F, hop) ** 2).mean(axis=1) + 1e-9)
    keep = e > e.max() - threshold_db
    d = np.sqrt(2.0 * ((a[:, 1:] - b[:, 1:]) ** 2).sum(axis=1))
    return float(10.0 / math.log(10.0) * d[keep].mean())


def pesq_wb(ref, syn, sr):
    try:
        from pesq import pesq
    except ImportError:
        return None, "pesq not installed (pip install pesq)"
    try:
        return float(pesq(sr, ref.astype(np.float32) / 32768, syn.astype(np.float32) / 32768, "wb")), None
    except Exception as e:  # pesq raises on silent or too short input
        return None, f"pesq failed: {e}"


def stoi(ref, syn, sr):
    try:
        from pystoi import stoi as _stoi
    except ImportError:
        return None, "pystoi not installed (pip install pystoi)"
    return float(_stoi(ref.astype(np.float64), syn.astype(np.float64), sr, extended=False)), None


def teacher_forced_bits(voc, audio, mel, hop, seconds=None):
    if seconds:
        audio = audio[:int(seconds * voc.sample_rate)]
        mel = mel[:-(-len(audio) // hop)]
    p = voc.teacher_forced(audio, mel)
    c, f = voc.model.representation.encode(audio)
    t = np.arange(len(audio))
    pc = np.maximum(p[t, 0, c], 1e-30)
    pf = np.maximum(p[t, 1, f], 1e-30)
    return float(-(np.log2(pc) + np.log2(pf)).mean()), len(audio)


def plot(path, ref_mel, syn_mel, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed"
    fig, ax = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    vmin, vmax = ref_mel.min(), ref_mel.max()
    for a, m, name in ((ax[0], ref_mel, "recording"), (ax[1], syn_mel, "synthesis")):
        a.imshow(m.T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
        a.set_ylabel(f"{name}\nmel band")
    ax[1].set_xlabel("frame")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=os.path.join(HERE, "festvox_ru_wavernn.npz"))
    ap.add_argument("--backend", default="jit", help="jitvoc backend: jit or reference")
    ap.add_argument("--dtype", default=None, help="int8, int16 or float32 (backend default if unset)")
    ap.add_argument("--max-sentences", type=int, default=None)
    ap.add_argument("--max-seconds", type=float, default=None, help="crop each sentence")
    ap.add_argument("--nll-seconds", type=float, default=None,
                    help="teacher-forced NLL on the first seconds only (0: skip)")
    ap.add_argument("--sentences", default=None, help="comma-separated names (default: split's test)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="eval_out")
    args = ap.parse_args(argv)

    import jitvoc
    from models.prepare_data import load_split, read_wav_int16

    split = load_split()
    names = args.sentences.split(",") if args.sentences else split["test"]
    if args.max_sentences:
        names = names[:args.max_sentences]
    voc = jitvoc.load(args.model, dtype=args.dtype, backend=args.backend)
    model = voc.model
    hop, sr = model.hop_length, model.sample_rate
    os.makedirs(args.out, exist_ok=True)
    rows, notes = [], set()
    for name in names:
        x, file_sr = read_wav_int16(os.path.join(split["wav_dir"], name + ".wav"))
        assert file_sr == sr, (name, file_sr, sr)
        if args.max_seconds:
            x = x[:int(args.max_seconds * sr)]
        mel = jitvoc.mel_spectrogram(x, sr, model.mel_config)
        t = time.time()
        y = voc.synthesize(mel, seed=args.seed)[:len(x)]
        synth_s = time.time() - t
        import soundfile as sf
        sf.write(os.path.join(args.out, f"{name}.synth.wav"), y, sr, subtype="PCM_16")
        syn_mel = jitvoc.mel_spectrogram(y, sr, model.mel_config)
        row = {"sentence": name, "seconds": len(x) / sr, "synth_seconds": synth_s,
               "realtime_factor": synth_s / (len(x) / sr)}
        row["pesq_wb"], n1 = pesq_wb(x, y, sr)
        row["stoi"], n2 = stoi(x, y, sr)
        row["mcd_db"] = mcd_db(mel, syn_mel, x, hop)
        if args.nll_seconds != 0:
            row["tf_bits_per_sample"], row["tf_samples"] = teacher_forced_bits(voc, x, mel, hop, args.nll_seconds)
        notes.update(n for n in (n1, n2) if n)
        err = plot(os.path.join(args.out, f"{name}.png"), mel, syn_mel,
                   f"{name}: {os.path.basename(args.model)} ({args.backend}, {voc.dtype})")
        if err:
            notes.add(err)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def mean(k):
        v = [r[k] for r in rows if r.get(k) is not None]
        return float(np.mean(v)) if v else None

    summary = {k: mean(k) for k in ("pesq_wb", "stoi", "mcd_db", "tf_bits_per_sample", "realtime_factor")}
    report = {"model": args.model, "backend": args.backend, "dtype": voc.dtype, "seed": args.seed,
              "sentences": names, "max_seconds": args.max_seconds, "nll_seconds": args.nll_seconds,
              "mcd": "DCT-II of jitvoc log-mel, c1..c24, frames within 40 dB of the loudest, no DTW",
              "summary": summary, "per_sentence": rows, "notes": sorted(notes)}
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    print("summary:", json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
