"""Quality report of a jitvoc model on the held-out recordings of models/split.json, per voice.

    python -m models.evaluate [MODEL] [--voices festvox_ru,asterisk_en] [--dtypes int8,float32] \
        [--max-sentences N] [--max-seconds S] [--nll-seconds S] [--out eval_out]

MODEL is a model file or an installed model's name (default: jitvoc's default model). Voices are
those of models/split.json: festvox_ru, asterisk_{ru,fr,es,it} (held-out recordings, never
trained on) and asterisk_en (evaluation only). By default all held-out sentences of festvox_ru
(26) and the first 8 held-out recordings of every other voice; a recording shorter than 1 s is
skipped (PESQ needs about a second of speech), so "first N" counts the longer ones only.
--max-sentences N takes the first N of every voice, --max-seconds crops each recording. The
default is about 450 s of audio (283 s of festvox_ru) and takes roughly 20 minutes with three
dtypes on the project's 2-core VM (3 s per second of audio).

For each recording (untrimmed, read with models.prepare_data.read_recording) its log-mel
(`jitvoc.mel_spectrogram`) is vocoded by the JIT engine in each dtype (seed 0), and inverted by
Griffin-Lim as the floor. Griffin-Lim: the magnitude spectrogram is the non-negative least-squares
solution of `fbank · S = exp(mel)` with jitvoc's own Slaney filterbank (`jitvoc.mel.mel_filterbank`,
docs/model.md), then 64 iterations of `librosa.griffinlim` (its default momentum 0.99, seeded)
with the model's n_fft, hop and Hann window of win_length, centred frames; jitvoc's frame f is
centred on sample f·hop + hop/2 where librosa's is centred on f·hop, so the output is delayed by
hop/2 samples. Metrics, each against the recording:

* PESQ wide band (ITU-T P.862.2, package `pesq`, 16 kHz) and STOI (package `pystoi`);
* MCD, mel-cepstral distortion in dB: cepstra c_1..c_24 are the orthonormal DCT-II of the
  natural-log mel spectrogram (jitvoc.mel_spectrogram, 80 bands) of each signal, c_0 (energy)
  left out; MCD = (10 / ln 10) · sqrt(2 · Σ_d (c_d − ĉ_d)²), averaged over the frames where the
  recording is within 40 dB of its loudest frame. The vocoder is time-aligned with its mel, so
  frames are compared one to one (no DTW). This is NOT the SPTK mcep-based MCD: compare numbers
  only with this script;
* teacher-forced NLL in bits per 16-bit sample (−log2 P(c_t) − log2 P(f_t) given the true past,
  the recording encoded with the model's representation, `Vocoder.teacher_forced` in the same
  dtype; --nll-seconds S: the first S seconds only, 0: skipped); none for Griffin-Lim;
* DC offset: the mean of the output samples (int16 units) per recording; the table gives the
  mean over recordings and the largest |mean|;
* voiced periodicity: in frames of 50 ms every 10 ms, each minus its mean, the peak of the
  normalized autocorrelation r(τ) = Σ x_n x_{n+τ} / sqrt(Σ x_n² · Σ x_{n+τ}²) (sums over the frame's
  overlapping part) over lags of 50-400 Hz (sample_rate/400 .. sample_rate/50); a frame is voiced
  when the recording's own peak is at least 0.5 and its energy within 40 dB of the loudest
  frame. Periodicity is the mean peak of the output over the recording's voiced frames, to be
  read against the same number on the recording itself (in the table title): noise scores low,
  clean harmonics close to the recording.

Writes <out>/report.md (a markdown table per voice, also printed: rows the dtypes and
griffin-lim, columns the means of the metrics), <out>/report.json (the tables' numbers and one
row per recording and system), and for the first recording of each voice a PNG of the log-mel
spectrograms (recording, every dtype, Griffin-Lim) and the WAVs. Metrics whose package is
missing or that fail on a recording are null, with the reason in "notes".
"""
import argparse
import json
import math
import os
import sys
import time

import numpy as np

DTYPES = ("int8", "int16", "float32")
GRIFFIN_LIM = "griffin-lim"
FESTVOX = "festvox_ru"
OTHER_VOICES_SENTENCES = 8  # default per voice other than festvox_ru (which uses all)
MIN_SECONDS = 1.0           # PESQ and STOI need a second or so of speech
GL_ITERATIONS = 64
PERIOD_FRAME_S, PERIOD_HOP_S = 0.05, 0.01
F0_MIN, F0_MAX = 50.0, 400.0
VOICED_PEAK, VOICED_DB = 0.5, 40.0
METRICS = ("pesq_wb", "stoi", "mcd_db", "tf_bits_per_sample", "dc_offset", "periodicity",
           "realtime_factor")


def heldout_recordings(split, voice, limit=None, min_seconds=MIN_SECONDS):
    """Yield (name, int16 audio) for the first `limit` (None: all) held-out recordings of `voice`
    in models/split.json that last at least `min_seconds`."""
    from models.prepare_data import read_recording
    count = 0
    for name in split["voices"][voice]["test"]:
        if limit is not None and count >= limit:
            return
        x, sr = read_recording(voice, name)
        if sr != split["sample_rate"]:
            raise SystemExit(f"{voice}/{name}: {sr} Hz, split.json says {split['sample_rate']} Hz")
        if len(x) >= min_seconds * sr:
            count += 1
            yield name, x


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
    return float(-(np.log2(pc) + np.log2(pf)).mean())


def griffin_lim(mel, model, seed=0):
    """int16 audio [len(mel) * hop] from a jitvoc log-mel by Griffin-Lim (see the docstring)."""
    import librosa
    from jitvoc.mel import mel_filterbank
    cfg, sr = model.mel_config, model.sample_rate
    hop = cfg["hop_length"]
    fbank = mel_filterbank(sr, cfg["n_fft"], cfg["n_mels"], cfg["fmin"], cfg["fmax"])
    magnitude = librosa.util.nnls(fbank, np.exp(mel.T.astype(np.float64)))
    y = librosa.griffinlim(magnitude, n_iter=GL_ITERATIONS, hop_length=hop,
                           win_length=cfg["win_length"], n_fft=cfg["n_fft"], window="hann",
                           center=True, length=len(mel) * hop - hop // 2, random_state=seed)
    y = np.concatenate([np.zeros(hop // 2), y])  # librosa's frame f is centred hop/2 earlier
    return np.clip(np.rint(y * 32768), -32768, 32767).astype(np.int16)


def autocorrelation_peaks(x, sr):
    """Per frame of PERIOD_FRAME_S every PERIOD_HOP_S: (the peak of the normalized
    autocorrelation over lags of F0_MAX..F0_MIN Hz, the frame energy in dB)."""
    n, hop = int(PERIOD_FRAME_S * sr), int(PERIOD_HOP_S * sr)
    x = np.asarray(x, np.float64) / 32768
    if len(x) < n:
        x = np.pad(x, (0, n - len(x)))
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[::hop]
    frames = frames - frames.mean(axis=1, keepdims=True)  # a DC offset is not periodicity
    lags = np.arange(int(sr / F0_MAX), int(sr / F0_MIN) + 1)
    spectrum = np.fft.rfft(frames, 2 * n, axis=1)
    r = np.fft.irfft(np.abs(spectrum) ** 2, 2 * n, axis=1)[:, lags]
    c = np.concatenate([np.zeros((len(frames), 1)), np.cumsum(frames ** 2, axis=1)], axis=1)
    head, tail = c[:, n - lags], c[:, n:n + 1] - c[:, lags]   # energies of x_n and x_{n+τ}
    peaks = (r / np.sqrt(np.maximum(head * tail, 1e-20))).max(axis=1)
    return peaks, 10 * np.log10(c[:, n] / n + 1e-20)


def voiced_frames(ref, sr):
    peaks, db = autocorrelation_peaks(ref, sr)
    return (peaks >= VOICED_PEAK) & (db > db.max() - VOICED_DB)


def periodicity(y, voiced, sr):
    """The mean autocorrelation peak of `y` over the frames marked `voiced` (None if none)."""
    peaks, _ = autocorrelation_peaks(y, sr)
    return float(peaks[voiced].mean()) if voiced.any() else None


def score(x, y, mel, model, voiced, notes) -> dict:
    """The metrics of output `y` against recording `x` (teacher forcing and timing excluded)."""
    sr, hop = model.sample_rate, model.hop_length
    row = {"dc_offset": float(y.mean()), "periodicity": periodicity(y, voiced, sr),
           "mcd_db": mcd_db(mel, _mel(y, model), x, hop)}
    row["pesq_wb"], n1 = pesq_wb(x, y, sr)
    row["stoi"], n2 = stoi(x, y, sr)
    notes.update(n for n in (n1, n2) if n)
    return row


def _mel(audio, model):
    import jitvoc
    return jitvoc.mel_spectrogram(audio, model.sample_rate, model.mel_config)


def evaluate_recording(voice, name, x, vocoders, model, args, notes):
    """One row per system for recording `x`, and the outputs {system: int16 audio}."""
    sr, hop = model.sample_rate, model.hop_length
    mel = _mel(x, model)
    voiced = voiced_frames(x, sr)
    base = {"voice": voice, "sentence": name, "seconds": len(x) / sr,
            "ref_periodicity": periodicity(x, voiced, sr), "voiced_frames": int(voiced.sum())}
    rows, outputs = [], {}
    for system in [*vocoders, GRIFFIN_LIM]:
        start = time.perf_counter()
        if system == GRIFFIN_LIM:
            y = griffin_lim(mel, model, args.seed)[:len(x)]
        else:
            y = vocoders[system].synthesize(mel, seed=args.seed)[:len(x)]
        row = dict(base, system=system, realtime_factor=(time.perf_counter() - start) / base["seconds"])
        row.update(score(x, y, mel, model, voiced, notes))
        row["tf_bits_per_sample"] = (teacher_forced_bits(vocoders[system], x, mel, hop, args.nll_seconds)
                                     if system != GRIFFIN_LIM and args.nll_seconds != 0 else None)
        rows.append(row)
        outputs[system] = y
        print(json.dumps(row), flush=True)
    return rows, outputs


def summarize(rows) -> dict:
    """{system: {metric: mean over recordings, "max_abs_dc": ..., "n": ...}} of one voice."""
    out = {}
    for system in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == system]
        s = {}
        for k in METRICS:
            v = [r[k] for r in mine if r[k] is not None]
            s[k] = float(np.mean(v)) if v else None
        s["max_abs_dc"] = max(abs(r["dc_offset"]) for r in mine)
        s["n"] = len(mine)
        out[system] = s
    return out


def markdown_table(voice, summary, rows) -> str:
    first = [r for r in rows if r["system"] == GRIFFIN_LIM]
    seconds = sum(r["seconds"] for r in first)
    ref = [r["ref_periodicity"] for r in first if r["ref_periodicity"] is not None]
    ref_text = f"{np.mean(ref):.3f}" if ref else "n/a"
    lines = [f"### {voice}: {len(first)} held-out recordings, {seconds:.1f} s; "
             f"periodicity of the recordings {ref_text}", "",
             "| system | PESQ-wb | STOI | MCD (dB) | bits/sample | DC mean | max abs DC "
             "| periodicity | real-time factor |",
             "|---|---|---|---|---|---|---|---|---|"]
    formats = (("pesq_wb", "{:.3f}"), ("stoi", "{:.3f}"), ("mcd_db", "{:.2f}"),
               ("tf_bits_per_sample", "{:.2f}"), ("dc_offset", "{:+.1f}"), ("max_abs_dc", "{:.1f}"),
               ("periodicity", "{:.3f}"), ("realtime_factor", "{:.3f}"))
    for system, s in summary.items():
        cells = [fmt.format(s[k]) if s[k] is not None else "—" for k, fmt in formats]
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(path, mels, title):
    """One log-mel spectrogram per (label, mel [F, n_mels]) of `mels`, stacked, on one scale."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed"
    fig, ax = plt.subplots(len(mels), 1, figsize=(10, 2.2 * len(mels)), sharex=True, squeeze=False)
    vmin, vmax = mels[0][1].min(), mels[0][1].max()
    for a, (name, m) in zip(ax[:, 0], mels):
        a.imshow(m.T, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="magma")
        a.set_ylabel(f"{name}\nmel band")
    ax[-1, 0].set_xlabel("frame")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return None


def save_example(out_dir, voice, name, x, outputs, model, label, notes):
    """The PNG and the WAVs of one recording and its outputs."""
    import soundfile as sf
    stem = os.path.join(out_dir, f"{voice}_{name.replace('/', '_')}")
    for system, y in outputs.items():
        sf.write(f"{stem}.{system}.wav", y, model.sample_rate, subtype="PCM_16")
    mels = [("recording", _mel(x, model))] + [(s, _mel(y, model)) for s, y in outputs.items()]
    err = plot(stem + ".png", mels, f"{voice}/{name}: {label}")
    if err:
        notes.add(err)


def parse_args(argv):
    from jitvoc import pretrained
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", default=pretrained.DEFAULT,
                    help=f"model file or installed model name (default {pretrained.DEFAULT})")
    ap.add_argument("--voices", default=None, help="comma-separated (default: every voice of "
                                                   "models/split.json)")
    ap.add_argument("--dtypes", default=",".join(DTYPES),
                    help=f"comma-separated JIT dtypes (default {','.join(DTYPES)})")
    ap.add_argument("--max-sentences", type=int, default=None,
                    help=f"per voice (default: all of {FESTVOX}, {OTHER_VOICES_SENTENCES} of "
                         f"the others)")
    ap.add_argument("--max-seconds", type=float, default=None, help="crop each recording")
    ap.add_argument("--nll-seconds", type=float, default=None,
                    help="teacher-forced NLL on the first seconds only (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="eval_out")
    return ap.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    import jitvoc
    from models.prepare_data import load_split

    split = load_split()
    voices = args.voices.split(",") if args.voices else list(split["voices"])
    unknown = sorted(set(voices) - set(split["voices"]))
    dtypes = args.dtypes.split(",")
    if unknown or not set(dtypes) <= set(DTYPES):
        raise SystemExit(f"voices must be among {', '.join(split['voices'])} and dtypes among "
                         f"{', '.join(DTYPES)}; got {args.voices} and {args.dtypes}")
    try:
        model = jitvoc.calibrate(jitvoc.load_model(args.model))   # exported models carry it
    except jitvoc.JitvocError as e:
        raise SystemExit(f"models.evaluate: {e}") from None
    vocoders = {d: jitvoc.load(model, dtype=d) for d in dtypes}
    label = f"{os.path.basename(str(args.model))}, seed {args.seed}"
    os.makedirs(args.out, exist_ok=True)
    rows, summaries, tables, notes = [], {}, [], set()
    for voice in voices:
        limit = args.max_sentences or (None if voice == FESTVOX else OTHER_VOICES_SENTENCES)
        mine = []
        for name, x in heldout_recordings(split, voice, limit):
            x = x[:int(args.max_seconds * model.sample_rate)] if args.max_seconds else x
            new, outputs = evaluate_recording(voice, name, x, vocoders, model, args, notes)
            if not mine:
                save_example(args.out, voice, name, x, outputs, model, label, notes)
            mine += new
        summaries[voice] = summarize(mine)
        tables.append(markdown_table(voice, summaries[voice], mine))
        rows += mine
    report_md = f"## {label}\n\n" + "\n".join(tables)
    print(report_md)
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(report_md)
    report = {"model": str(args.model), "seed": args.seed, "dtypes": dtypes,
              "max_sentences": args.max_sentences, "max_seconds": args.max_seconds,
              "nll_seconds": args.nll_seconds, "summary": summaries, "per_sentence": rows,
              "notes": sorted(notes)}
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
