"""models/exposure_gap.py: its one-step draw follows the probabilities it is given, and each
teacher-forced output decodes the codes it names."""
import numpy as np
import pytest

from models import exposure_gap


def test_draw_takes_the_only_possible_class_and_follows_the_probabilities():
    rng = np.random.default_rng(1)
    one_hot = np.zeros((50, 256), np.float32)
    one_hot[np.arange(50), np.arange(50) * 5] = 1
    assert exposure_gap.draw(one_hot, rng).tolist() == (np.arange(50) * 5).tolist()
    two = np.zeros((20000, 256), np.float32)
    two[:, 3], two[:, 200] = 0.25, 0.75
    classes = exposure_gap.draw(two, rng)
    assert set(classes.tolist()) == {3, 200}
    assert np.mean(classes == 200) == pytest.approx(0.75, abs=0.02)


def test_true_coarse_output_is_the_representation_ceiling():
    import jitvoc
    from jitvoc.model import random_model
    from jitvoc.representation import decode
    voc = jitvoc.load(jitvoc.calibrate(random_model(hidden=32, density=0.25, sample_rate=16000)),
                      dtype="float32")
    x = (np.sin(np.arange(1200) * 0.05) * 8000).astype(np.int16)
    mel = jitvoc.mel_spectrogram(x, voc.model.sample_rate, voc.model.mel_config)
    out = exposure_gap.one_step_outputs(voc, x, mel, np.random.default_rng(0))
    c, f = voc.model.representation.encode(x)
    middle = decode(voc.model.representation, c, np.full_like(f, 128))[0]
    assert np.array_equal(out["true coarse, fine middle"], middle)
    assert all(len(y) == len(x) for y in out.values())
