"""Prepare the training voices that Debian ships for a jitvoc WaveRNN.

    python -m models.prepare_data [--out .traindata] [--shard-mib 24]

Voices (`VOICES`; each one's notice is shipped beside the model, see models/CARD.md):

* festvox_ru: Debian `festvox-ru` (msu_ru_nsh_clunits), one male Russian speaker, 16 kHz WAV;
* asterisk_{ru,fr,es,it}: Debian `asterisk-core-sounds-{ru,fr,es,it}-g722`, the prompts of one
  professional speaker each, G.722 at 64 kbit/s, decoded to 16 kHz int16 with PyPI `g722`;
* asterisk_en (`asterisk-core-sounds-en-g722`) is listed for evaluation only: never trained on.

What it does, deterministically:

* lists each voice's recordings in sorted order (relative names, without extension; the
  Asterisk `silence/` files are skipped) and holds out every 24th one (index % 24 == 0); the
  split goes to models/split.json (committed; the other scripts read it);
* trims long leading/trailing silence (frames more than 40 dB under the loudest 10 ms frame,
  keeping 100 ms);
* shuffles all training recordings of all voices together (seed 0) and cuts them into shards of
  about `--shard-mib` MiB, each ONE lossless 16-bit FLAC of its recordings back to back plus a
  JSON index (name, voice, offset, length): at most 64 MiB travels to the GPU machine per
  training run, a checkpoint included, so each run takes one shard, and every shard holds every
  voice in proportion;
* writes `heldout.flac` (+ .json): the first `--eval-sentences` held-out recordings of every
  training voice, for the trainer's per-voice held-out likelihood.
"""
import argparse
import glob
import json
import os
import shutil

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SPLIT_PATH = os.path.join(HERE, "split.json")
HOLDOUT_EVERY = 24
SAMPLE_RATE = 16000
FESTVOX_DIR = "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"
ASTERISK_DIR = "/usr/share/asterisk/sounds"
ASTERISK_NOTICE = "models/LICENSE.asterisk-core-sounds.txt"


def _asterisk(lang, folder, speaker, licence) -> dict:
    """A voice of Debian's asterisk-core-sounds-LANG-g722 package."""
    return {"dir": f"{ASTERISK_DIR}/{folder}", "ext": ".g722",
            "package": f"asterisk-core-sounds-{lang}-g722", "speaker": speaker,
            "licence": licence, "notice": ASTERISK_NOTICE}


VOICES = {
    "festvox_ru": {"dir": FESTVOX_DIR, "ext": ".wav", "package": "festvox-ru",
                   "speaker": "one male Russian speaker (msu_ru_nsh_clunits)", "licence": "BSD-like",
                   "notice": "models/LICENSE.festvox-ru.txt"},
    "asterisk_ru": _asterisk("ru", "ru_RU_f_IvrvoiceRU", "Russian prompts (ivrvoice.ru)", "CC-BY-3.0"),
    "asterisk_fr": _asterisk("fr", "fr_CA_f_June", "June Wallack (French, female)", "CC-BY-SA-3.0"),
    "asterisk_es": _asterisk("es", "es_MX_f_Allison", "Allison Smith (Spanish, female)", "CC-BY-SA-3.0"),
    "asterisk_it": _asterisk("it", "it_IT_m_Carlo", "Carlo Flora (Italian, male)", "CC-BY-3.0"),
}
EVAL_ONLY = {
    "asterisk_en": _asterisk("en", "en_US_f_Allison", "Allison Smith (English, female)", "CC-BY-SA-3.0"),
}


def voice_info(voice) -> dict:
    return VOICES.get(voice) or EVAL_ONLY[voice]


def read_g722(path):
    """int16 samples at 16 kHz of a G.722 file at 64 kbit/s."""
    import G722  # PyPI package g722
    with open(path, "rb") as f:
        return np.asarray(G722.G722(SAMPLE_RATE, 64000).decode(f.read()), np.int16), SAMPLE_RATE


def read_recording(voice, name):
    info = voice_info(voice)
    path = os.path.join(info["dir"], name + info["ext"])
    if info["ext"] == ".g722":
        return read_g722(path)
    from jitvoc.audio import read_audio
    return read_audio(path)[:2]


def list_recordings(voice) -> list:
    info = voice_info(voice)
    paths = glob.glob(os.path.join(info["dir"], "**", "*" + info["ext"]), recursive=True)
    names = sorted(os.path.relpath(p, info["dir"])[:-len(info["ext"])] for p in paths)
    names = [n for n in names if not n.startswith("silence/")]
    if not names:
        raise SystemExit(f"no {info['ext']} files in {info['dir']}: install the Debian package "
                         f"{info['package']}")
    return names


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


def make_split() -> dict:
    voices = {}
    for voice in [*VOICES, *EVAL_ONLY]:
        names = list_recordings(voice)
        info = voice_info(voice)
        entry = {"package": info["package"], "dir": info["dir"], "ext": info["ext"],
                 "speaker": info["speaker"], "licence": info["licence"]}
        if voice in EVAL_ONLY:
            entry.update(train=[], test=names, rule="evaluation only: never trained on")
        else:
            entry.update(train=[n for i, n in enumerate(names) if i % HOLDOUT_EVERY],
                         test=[n for i, n in enumerate(names) if i % HOLDOUT_EVERY == 0],
                         rule=f"sorted names; held out: index % {HOLDOUT_EVERY} == 0")
        voices[voice] = entry
    return {"sample_rate": SAMPLE_RATE, "voices": voices}


def load_split(path=SPLIT_PATH) -> dict:
    with open(path) as f:
        return json.load(f)


def heldout(split, voice) -> list:
    return split["voices"][voice]["test"]


def _write_shard(path, items, sr):
    """items: [(voice, name, int16 audio, (a, b) trim)] -> one FLAC and its JSON index."""
    import soundfile as sf
    index, off = [], 0
    for voice, name, x, trim in items:
        index.append({"voice": voice, "name": name, "offset": off, "length": len(x), "trim": trim})
        off += len(x)
    sf.write(path + ".flac", np.concatenate([x for _, _, x, _ in items]), sr, format="FLAC",
             subtype="PCM_16")
    with open(path + ".json", "w") as f:
        json.dump({"sample_rate": sr, "samples": int(off), "utterances": index}, f)
    return off


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".traindata")
    ap.add_argument("--shard-mib", type=float, default=24.0,
                    help="target FLAC size of a shard (one shard travels with each GPU run)")
    ap.add_argument("--eval-sentences", type=int, default=4,
                    help="held-out recordings per voice in heldout.flac (the trainer's check)")
    ap.add_argument("--example", default="ru_0749",
                    help="held-out festvox_ru sentence copied unchanged to examples/<name>.wav")
    args = ap.parse_args(argv)

    split = make_split()
    with open(SPLIT_PATH, "w") as f:
        json.dump(split, f, indent=1, ensure_ascii=False)
        f.write("\n")
    for v, e in split["voices"].items():
        print(f"{v}: {len(e['train'])} train, {len(e['test'])} held out")
    if args.example:
        if args.example not in heldout(split, "festvox_ru"):
            raise SystemExit(f"{args.example} is not a held-out sentence")
        dst = os.path.join(os.path.dirname(HERE), "examples", args.example + ".wav")
        shutil.copyfile(os.path.join(FESTVOX_DIR, args.example + ".wav"), dst)

    items, seconds = [], {}
    for voice in VOICES:
        for name in split["voices"][voice]["train"]:
            x, sr = read_recording(voice, name)
            assert sr == SAMPLE_RATE, (voice, name, sr)
            a, b = trim_silence(x, sr)
            items.append((voice, name, x[a:b], [a, b]))
            seconds[voice] = seconds.get(voice, 0.0) + (b - a) / sr
    order = np.random.default_rng(0).permutation(len(items))
    items = [items[i] for i in order]
    # an empty recording (asterisk_ru "is" has no samples) has no mel: dropped after the
    # shuffle, so every shard keeps the contents the training chain has already seen
    empty = [f"{v}/{n}" for v, n, x, _ in items if len(x) == 0]
    if empty:
        print("empty recordings left out:", ", ".join(empty))
    items = [it for it in items if len(it[2])]
    # FLAC of this speech takes about 1.1 MiB per minute: cut by samples, then check the size
    per_shard = int(args.shard_mib / 1.1 * 60 * SAMPLE_RATE)
    os.makedirs(args.out, exist_ok=True)
    shard, start, acc = 0, 0, 0
    for i, (_, _, x, _) in enumerate(items + [(None, None, np.zeros(per_shard, np.int16), None)]):
        if acc + len(x) > per_shard and i > start:
            path = os.path.join(args.out, f"shard{shard}")
            n = _write_shard(path, items[start:i], SAMPLE_RATE)
            print(f"shard {shard}: {i - start} recordings, {n / SAMPLE_RATE / 60:.1f} min, "
                  f"{os.path.getsize(path + '.flac') / 2**20:.1f} MiB")
            shard, start, acc = shard + 1, i, 0
        acc += len(x)
    check = []
    for voice in VOICES:
        for name in heldout(split, voice)[:args.eval_sentences]:
            x, sr = read_recording(voice, name)
            a, b = trim_silence(x, sr)
            check.append((voice, name, x[a:b], [a, b]))
    _write_shard(os.path.join(args.out, "heldout"), check, SAMPLE_RATE)
    print("training minutes per voice:", {v: round(s / 60, 1) for v, s in seconds.items()})


if __name__ == "__main__":
    main()
