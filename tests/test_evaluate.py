"""models/evaluate.py: voiced periodicity, the Griffin-Lim floor, and the report end to end (a tiny
random model on one recording per voice). Skipped where librosa, pesq, pystoi or the data are
missing."""
import json
import os

import numpy as np
import pytest

import jitvoc
from jitvoc.audio import read_audio
from jitvoc.model import random_model

for package in ("librosa", "pesq", "pystoi", "soundfile"):
    pytest.importorskip(package)
from models import evaluate  # noqa: E402  (needs the packages above)
from models.prepare_data import load_split  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SR = 16000


def test_periodicity_of_a_tone_and_of_noise():
    t = np.arange(SR) / SR
    tone = (8000 * np.sin(2 * np.pi * 150 * t) + 5000).astype(np.int16)  # with a DC offset
    noise = np.random.default_rng(0).normal(0, 3000, SR).astype(np.int16)
    voiced = evaluate.voiced_frames(tone, SR)
    assert voiced.all() and not evaluate.voiced_frames(noise, SR).any()
    assert evaluate.periodicity(tone, voiced, SR) > 0.95
    assert evaluate.periodicity(noise, voiced, SR) < 0.3


def test_griffin_lim_is_aligned_with_the_recording():
    model = jitvoc.load_model(jitvoc.pretrained.DEFAULT)
    x = read_audio(os.path.join(ROOT, "examples", "ru_0749.wav"))[0][:3 * SR]
    y = evaluate.griffin_lim(jitvoc.mel_spectrogram(x, SR, model.mel_config), model)[:len(x)]
    assert evaluate.stoi(x, y, SR)[0] > 0.95      # 0.90 without the hop/2 delay
    assert evaluate.pesq_wb(x, y, SR)[0] > 2.2


def test_report_end_to_end(tmp_path):
    split = load_split()
    voices = ["festvox_ru", "asterisk_en"]
    if not all(os.path.isdir(split["voices"][v]["dir"]) for v in voices):
        pytest.skip("the festvox-ru or Asterisk English recordings are not installed")
    random_model(hidden=32, density=0.25, sample_rate=SR, cond_channels=8).save(tmp_path / "m.npz")
    out = tmp_path / "out"
    assert evaluate.main([str(tmp_path / "m.npz"), "--voices", ",".join(voices), "--dtypes",
                          "int8", "--max-sentences", "1", "--max-seconds", "1.5",
                          "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert list(report["summary"]) == voices
    for voice in voices:
        summary = report["summary"][voice]
        assert list(summary) == ["int8", "griffin-lim"]
        assert summary["griffin-lim"]["pesq_wb"] > summary["int8"]["pesq_wb"]
        assert summary["int8"]["tf_bits_per_sample"] > 0
        assert summary["griffin-lim"]["tf_bits_per_sample"] is None
        assert list(out.glob(f"{voice}_*.png"))
    assert len(report["per_sentence"]) == 4
    assert (out / "report.md").read_text().count("| griffin-lim |") == 2


def test_a_missing_model_is_named_not_a_traceback(tmp_path):
    with pytest.raises(SystemExit, match=r"models.evaluate: model file .*missing.npz: no such file"):
        evaluate.main([str(tmp_path / "missing.npz"), "--out", str(tmp_path / "out")])
