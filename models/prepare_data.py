"""Prepare festvox-ru (Debian package `festvox-ru`) for training a jitvoc WaveRNN.

    python -m models.prepare_data [--wav-dir DIR] [--out .traindata] [--shards 2]

What it does, deterministically:

* lists the 620 recordings (16 kHz, 16-bit, mono) in sorted order;
* holds out every 24th one (sorted index i with i % 24 == 0: 26 sentences) and writes the
  split to models/split.json (committed; the other scripts read it);
* trims long leading/trailing silence of the training sentences (frame energy more than
  40 dB under the sentence's loudest 10 ms frame, keeping 100 ms of margin);
* writes the training sentences, interleaved into `--shards` shards (sentence k goes to shard
  k % shards), each as ONE lossless 16-bit FLAC file of all its sentences back to back plus a
  JSON index (name, offset, length). FLAC keeps each shard under ~50 MiB so that one shard
  can travel to the GPU machine per training run (its working tree is limited to 64 MiB).

The audio is stored as int16 at 16 kHz, unchanged apart from the trimming.
"""
import argparse
import glob
import json
import os
import shutil

import numpy as np

DEFAULT_WAV_DIR = "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"
TXT = "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/etc/txt.done.data"
HERE = os.path.dirname(os.path.abspath(__file__))
SPLIT_PATH = os.path.join(HERE, "split.json")
HOLDOUT_EVERY = 24


def read_wav_int16(path):
    """int16 mono samples and the sample rate of a PCM-16 WAV (soundfile if present, else scipy)."""
    try:
        import soundfile as sf
        x, sr = sf.read(path, dtype="int16", always_2d=False)
    except ImportError:
        from scipy.io import wavfile
        sr, x = wavfile.read(path)
    x = np.asarray(x)
    if x.ndim != 1 or x.dtype != np.int16:
        raise ValueError(f"{path}: expected mono int16, got {x.dtype} {x.shape}")
    return x, int(sr)


def trim_silence(x, sr, threshold_db=40.0, margin_s=0.1, frame_s=0.01):
    """(start, end) sample indices keeping everything within `threshold_db` of the loudest frame."""
    n = int(sr * frame_s)
    frames = len(x) // n
    if frames < 3:
        return 0, len(x)
    e = np.sqrt((x[: frames * n].astype(np.float64).reshape(frames, n) ** 2).mean(axis=1))
    db = 20 * np.log10(e + 1e-9)
    loud = np.nonzero(db > db.max() - threshold_db)[0]
    m = int(sr * margin_s)
    return max(0, int(loud[0]) * n - m), min(len(x), (int(loud[-1]) + 1) * n + m)


def make_split(wav_dir=DEFAULT_WAV_DIR):
    names = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(wav_dir, "*.wav")))
    if not names:
        raise SystemExit(f"no wav files in {wav_dir}: install the Debian package festvox-ru")
    test = [n for i, n in enumerate(names) if i % HOLDOUT_EVERY == 0]
    train = [n for i, n in enumerate(names) if i % HOLDOUT_EVERY != 0]
    return {
        "dataset": "festvox-ru (Debian package festvox-ru, voice msu_ru_nsh_clunits), one male Russian speaker",
        "wav_dir": wav_dir,
        "rule": f"sorted file names; held out: index % {HOLDOUT_EVERY} == 0",
        "sample_rate": 16000,
        "train": train,
        "test": test,
    }


def load_split(path=SPLIT_PATH):
    with open(path) as f:
        return json.load(f)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--wav-dir", default=DEFAULT_WAV_DIR)
    ap.add_argument("--out", default=".traindata")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--eval-sentences", type=int, default=8,
                    help="held-out sentences written to heldout.flac for the trainer's check")
    ap.add_argument("--no-trim", action="store_true")
    ap.add_argument("--example", default="ru_0749",
                    help="held-out sentence copied unchanged to examples/<name>.wav (the shortest "
                         "one, 5.3 s); '' for none")
    args = ap.parse_args(argv)

    split = make_split(args.wav_dir)
    with open(SPLIT_PATH, "w") as f:
        json.dump(split, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"split: {len(split['train'])} train, {len(split['test'])} held out -> {SPLIT_PATH}")

    if args.example:
        if args.example not in split["test"]:
            raise SystemExit(f"{args.example} is not a held-out sentence")
        src = os.path.join(args.wav_dir, args.example + ".wav")
        dst = os.path.join(os.path.dirname(HERE), "examples", args.example + ".wav")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
        print(f"example: {src} -> {dst}")

    import soundfile as sf  # FLAC writer (pip install soundfile)
    os.makedirs(args.out, exist_ok=True)
    total = {"raw": 0, "kept": 0}
    for s in range(args.shards):
        names = split["train"][s::args.shards]
        pieces, index, off = [], [], 0
        for name in names:
            x, sr = read_wav_int16(os.path.join(args.wav_dir, name + ".wav"))
            assert sr == 16000, (name, sr)
            a, b = (0, len(x)) if args.no_trim else trim_silence(x, sr)
            pieces.append(x[a:b])
            index.append({"name": name, "offset": off, "length": b - a, "trim": [a, b]})
            off += b - a
            total["raw"] += len(x)
            total["kept"] += b - a
        audio = np.concatenate(pieces)
        flac = os.path.join(args.out, f"shard{s}.flac")
        sf.write(flac, audio, 16000, format="FLAC", subtype="PCM_16")
        with open(os.path.join(args.out, f"shard{s}.json"), "w") as f:
            json.dump({"sample_rate": 16000, "samples": int(off), "utterances": index}, f)
        print(f"shard {s}: {len(names)} sentences, {off / 16000 / 60:.1f} min, "
              f"{os.path.getsize(flac) / 2**20:.1f} MiB -> {flac}")
    # A few held-out sentences (trimmed the same way) for the trainer's held-out NLL check.
    pieces, index, off = [], [], 0
    for name in split["test"][:args.eval_sentences]:
        x, sr = read_wav_int16(os.path.join(args.wav_dir, name + ".wav"))
        a, b = (0, len(x)) if args.no_trim else trim_silence(x, sr)
        pieces.append(x[a:b])
        index.append({"name": name, "offset": off, "length": b - a, "trim": [a, b]})
        off += b - a
    sf.write(os.path.join(args.out, "heldout.flac"), np.concatenate(pieces), 16000, format="FLAC", subtype="PCM_16")
    with open(os.path.join(args.out, "heldout.json"), "w") as f:
        json.dump({"sample_rate": 16000, "samples": int(off), "utterances": index}, f)
    print(f"held-out check set: {len(index)} sentences, {off / 16000:.0f} s")
    print(f"kept {total['kept'] / 16000 / 60:.1f} of {total['raw'] / 16000 / 60:.1f} min after trimming")


if __name__ == "__main__":
    main()
