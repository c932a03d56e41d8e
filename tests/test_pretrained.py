"""Installed models (jitvoc.pretrained): loading by name or path, unknown names, `jitvoc models`,
the default model of `jitvoc synth` / `jitvoc resynth`, and names in `jitvoc kernels`."""
import pathlib

import numpy as np
import pytest

import jitvoc
from jitvoc import pretrained
from jitvoc.audio import read_audio, write_audio
from jitvoc.cli import main
from jitvoc.model import random_model
from jitvoc.reference.vocoder import ReferenceEngine


def same(a, b) -> bool:
    wa, wb = a.weights, b.weights
    return a.meta == b.meta and wa.keys() == wb.keys() and all(
        np.array_equal(wa[k], wb[k]) for k in wa)


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """A package folder holding one tiny model, "tiny", which is the default."""
    folder = tmp_path / "pretrained"
    folder.mkdir()
    model = random_model(hidden=32, density=0.25, sample_rate=16000, n_mels=8, cond_channels=8)
    model.save(folder / "tiny.npz")
    monkeypatch.setattr(pretrained, "DIRECTORY", str(folder))
    monkeypatch.setattr(pretrained, "DEFAULT", "tiny")
    return model


def test_the_shipped_default_is_installed_and_loads_by_name():
    assert pretrained.DEFAULT in pretrained.names()
    by_name = jitvoc.load_model(pretrained.DEFAULT)
    by_path = jitvoc.load_model(pretrained.path(pretrained.DEFAULT))
    assert same(by_name, by_path)


def test_load_by_name_and_by_path(installed, tmp_path):
    assert pretrained.names() == ["tiny"]
    assert same(jitvoc.load("tiny", engine=ReferenceEngine).model, installed)
    installed.save(tmp_path / "own.npz")
    for path in (str(tmp_path / "own.npz"), tmp_path / "own.npz"):
        assert same(jitvoc.load_model(path), installed)


def test_unknown_name_lists_the_installed_models(installed):
    with pytest.raises(jitvoc.ModelFileError, match=r"unknown model name 'nosuch'; "
                                                    r"installed models: tiny"):
        jitvoc.load("nosuch")


def test_a_path_is_never_taken_for_a_name(installed, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for path in ("./tiny", "tiny.npz", pathlib.Path("tiny")):
        with pytest.raises(jitvoc.ModelFileError, match="no such file"):
            jitvoc.load_model(path)


def test_models_command_lists_the_installed_models(installed, capsys):
    assert main(["models"]) == 0
    assert capsys.readouterr().out.startswith("tiny (default): ")


def test_resynth_uses_the_default_model(installed, tmp_path, capsys):
    audio = np.random.default_rng(0).integers(-3000, 3000, 1000).astype(np.int16)
    write_audio(tmp_path / "in.wav", audio, 16000)
    assert main(["resynth", str(tmp_path / "in.wav"), "-o", str(tmp_path / "out.wav"),
                 "--backend", "reference"]) == 0
    voc = jitvoc.load(installed, engine=ReferenceEngine)
    expected = voc.synthesize(jitvoc.mel_spectrogram(audio, 16000, voc.model.mel_config))
    np.testing.assert_array_equal(read_audio(tmp_path / "out.wav")[0], expected[:len(audio)])
    assert main(["resynth", "nosuch", str(tmp_path / "in.wav"), "-o", str(tmp_path / "x.wav")]) == 2
    assert "unknown model name 'nosuch'" in capsys.readouterr().err


def test_kernels_command_takes_a_name(installed, tmp_path):
    assert main(["kernels", "tiny", "--emit", "ll", "--out", str(tmp_path / "k")]) == 0
    assert (tmp_path / "k" / "plan.json").exists()
