"""The training recipe end to end on the CPU (models/configs/smoke.json: hidden 32, 4 sentences,
50 steps, < 2 minutes), the export to a jitvoc model file, and the PyTorch model against the
NumPy reference of docs/model.md. Skipped where torch (or the festvox-ru data) is missing."""
import os

import numpy as np
import pytest

from jitvoc.mel import DEFAULT_CONFIG, mel_spectrogram
from jitvoc.reference.vocoder import ReferenceEngine

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WAV_DIR = "/usr/share/festival/voices/russian/msu_ru_nsh_clunits/wav"


def _randomized_model(hidden=32, seed=0):
    """A WaveRNN with large random weights (so gate-order mistakes show) and random 16x1 masks."""
    from models import train
    cfg = train.load_config(os.path.join(ROOT, "models", "configs", "smoke.json"))
    cfg["hidden"] = hidden
    cfg["mel"] = dict(DEFAULT_CONFIG)
    torch.manual_seed(seed)
    model = train.build_model(cfg, 80)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.4)
        for conv in model.convs:
            conv.weight.mul_(0.1)
    pruner = train.Pruner(model, cfg)
    pruner.p = dict(pruner.p, start=0, span=1, R=0.5, O=0.5)
    pruner.update(1, 1)
    return model, pruner, cfg


def _save_ckpt(tmp_path, model, pruner, cfg):
    from models import train
    opt = torch.optim.Adam(model.parameters())
    path = str(tmp_path / "ckpt")
    train.save_checkpoint(path, model, pruner, opt, {"config": cfg, "step": 1, "runs": []},
                          torch.Generator())
    return path


@pytest.mark.parametrize("representation", [
    {"code": "linear", "preemphasis": 0.0}, {"code": "mulaw", "preemphasis": 0.85},
    {"code": "mulaw", "preemphasis": 0.85, "dc_block": 0.99}])
def test_torch_model_matches_jitvoc_reference(tmp_path, representation):
    jitvoc = pytest.importorskip("jitvoc")
    from models import train
    from models.export import export
    model, pruner, cfg = _randomized_model()
    cfg["representation"] = representation
    out = str(tmp_path / "m.npz")
    export(_save_ckpt(tmp_path, model, pruner, cfg), out)
    voc = jitvoc.load(jitvoc.load_model(out), engine=ReferenceEngine)
    rng = np.random.default_rng(0)
    audio = (np.cumsum(rng.normal(0, 900, 700)) % 20000 - 10000).astype(np.int16)
    mel = jitvoc.mel_spectrogram(audio, 16000)
    p_ref = voc.teacher_forced(audio, mel)
    lc, lf = train.utterance_logits(model, audio, mel, 200, train.representation(cfg))
    p_torch = np.stack([torch.softmax(lc, -1).numpy(), torch.softmax(lf, -1).numpy()], axis=1)
    assert p_ref.max() > 0.05  # far from uniform (1/256)
    np.testing.assert_allclose(p_torch, p_ref, atol=2e-4)
    assert voc.model.representation.dc_block == representation.get(
        "dc_block", 0.995 if representation["preemphasis"] else 0.0)


def test_export_folds_a_coarse_temperature(tmp_path):
    """--coarse-temperature T: the coarse softmax becomes softmax(logits / T), the fine one is
    untouched, and the file says so."""
    jitvoc = pytest.importorskip("jitvoc")
    from models.export import export
    model, pruner, cfg = _randomized_model()
    cfg["representation"] = {"code": "mulaw", "preemphasis": 0.85}
    ckpt = _save_ckpt(tmp_path, model, pruner, cfg)
    plain = export(ckpt, str(tmp_path / "plain.npz"))
    cooled = export(ckpt, str(tmp_path / "cooled.npz"), coarse_temperature=0.5)
    assert cooled.meta["provenance"]["sampling"]["coarse_temperature"] == 0.5
    assert "sampling" not in plain.meta["provenance"]
    rng = np.random.default_rng(0)
    audio = (np.cumsum(rng.normal(0, 900, 700)) % 20000 - 10000).astype(np.int16)
    mel = jitvoc.mel_spectrogram(audio, 16000)
    p_plain, p_cooled = (jitvoc.load(m, engine=ReferenceEngine).teacher_forced(audio, mel)
                         for m in (plain, cooled))
    sharpened = p_plain[:, 0].astype(np.float64) ** 2
    np.testing.assert_allclose(p_cooled[:, 0], sharpened / sharpened.sum(1, keepdims=True),
                               atol=1e-5)
    np.testing.assert_array_equal(p_cooled[:, 1], p_plain[:, 1])


def test_export_dc_block():
    """The file's DC blocker: --dc-block, else the config's, else 0.995 with pre-emphasis."""
    from models.export import file_representation
    pre = {"code": "mulaw", "preemphasis": 0.85}
    config_r = dict(pre, dc_block=0.99)
    assert file_representation(pre) == dict(pre, dc_block=0.995)
    assert file_representation({"code": "linear", "preemphasis": 0.0})["dc_block"] == 0.0
    assert file_representation(config_r) == config_r
    assert file_representation(config_r, 0.998)["dc_block"] == 0.998
    assert file_representation(pre, 0.0)["dc_block"] == 0.0


def test_block_pruning_masks():
    from models.wavernn import block_mask, sparsity_at
    w = torch.randn(64, 48)
    m = block_mask(w, 0.75)
    blocks = m.reshape(4, 16, 48)
    assert torch.all(blocks == blocks[:, :1, :])          # 16 rows of one column share a mask
    assert abs(1 - float(m.mean()) - 0.75) < 1e-6
    m2 = block_mask(w * m, 0.5, m)                          # never regrows
    assert torch.all(m2 <= m)
    assert sparsity_at(0, 0.95, 10, 100) == 0.0
    assert sparsity_at(110, 0.95, 10, 100) == pytest.approx(0.95)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(WAV_DIR), reason="festvox-ru is not installed")
def test_smoke_training_and_export(tmp_path):
    jitvoc = pytest.importorskip("jitvoc")
    pytest.importorskip("soundfile")
    from models import train
    out = tmp_path / "model.npz"
    rc = train.main(["--config", os.path.join(ROOT, "models", "configs", "smoke.json"),
                     "--out", str(tmp_path / "ckpt"), "--export", str(out), "--workers", "1"])
    assert rc == 0
    model = jitvoc.load_model(str(out))
    assert model.hidden == 32
    meta = model.meta
    prov = meta["provenance"]
    assert prov["steps"] == 50
    assert prov["sparsity"]["gru.R"] >= 0.85
    assert "activation_ranges" in meta["quantization"]
    for name, (w, mask) in model.matrices().items():
        assert np.all(w[mask == 0] == 0), name


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(WAV_DIR), reason="festvox-ru is not installed")
def test_resume_is_exact(tmp_path):
    """Two runs split by --until (the second resuming from the first's checkpoint) end with the
    same bits as one uninterrupted run; the compact copy restores the weights to fp16."""
    pytest.importorskip("soundfile")
    from models import train
    config = os.path.join(ROOT, "models", "configs", "smoke.json")
    common = ["--config", config, "--workers", "1", "--steps", "12"]
    assert train.main(common + ["--out", str(tmp_path / "one")]) == 0
    assert train.main(common + ["--out", str(tmp_path / "a"), "--until", "6"]) == 0
    assert train.main(common + ["--out", str(tmp_path / "b"), "--resume", str(tmp_path / "a"),
                                "--compact", str(tmp_path / "compact.npz")]) == 0
    one, split = train.read_checkpoint(str(tmp_path / "one")), train.read_checkpoint(str(tmp_path / "b"))
    assert split[2]["step"] == one[2]["step"] == 12
    for k in one[0]:
        np.testing.assert_array_equal(split[0][k], one[0][k], err_msg=k)
    for k in one[4]:
        np.testing.assert_array_equal(split[4][k], one[4][k], err_msg=k)
    np.testing.assert_array_equal(split[3], one[3])                       # generator state
    compact = train.read_checkpoint(str(tmp_path / "compact.npz"))
    assert compact[4] == {} and compact[2]["step"] == 12
    for k in one[0]:
        np.testing.assert_array_equal(compact[0][k], one[0][k].astype(np.float16), err_msg=k)
    for k in one[1]:
        np.testing.assert_array_equal(compact[1][k], one[1][k], err_msg=k)


def test_rescaled_schedule_continues_where_it_was():
    """--rescale-to moves the step to the same fraction of the new plan: the learning rate and
    the pruning targets at the new step are those at the old one."""
    from models import train
    from models.wavernn import sparsity_at
    cfg = train.load_config(os.path.join(ROOT, "models", "configs", "multivoice.json"))
    meta = {"step": 11802, "rewarm_from": 11000}
    lr, z = train.lr_at(11802, cfg, 50000), sparsity_at(11802, 0.95, 10000, 22500)
    train.rescale_schedule(meta, cfg, 100000)
    assert (meta["step"], meta["rewarm_from"], cfg["total_steps"]) == (23604, 22000, 100000)
    assert meta["rescaled"] == [{"from": [11802, 50000], "to": [23604, 100000]}]
    # the 500 warm-up steps are not rescaled: the cosine's phase moves by 0.5%
    assert train.lr_at(meta["step"], cfg, 100000) == pytest.approx(lr, rel=1e-2)
    assert sparsity_at(meta["step"], 0.95, 20000, 45000) == pytest.approx(z, rel=1e-6)


@pytest.mark.slow   # 20-30 s of torch sampling
def test_free_running_samples(tmp_path):
    """Free-running samples: one int16 array per recording, as long as the recording or the
    requested seconds, the same for the same seed; saved by name for score_free_running."""
    from models import train
    model, _, cfg = _randomized_model()
    rep = train.representation(cfg)
    mel_cfg = dict(DEFAULT_CONFIG)
    rng = np.random.default_rng(0)
    utts = [("v", "a", (rng.standard_normal(700) * 3000).astype(np.int16)),
            ("v", "b", (rng.standard_normal(1900) * 3000).astype(np.int16))]
    mels = [mel_spectrogram(x, 16000, mel_cfg) for _, _, x in utts]
    one = train.free_running(model, utts, mels, mel_cfg["hop_length"], "cpu", rep, seconds=0.1,
                               sample_rate=16000)
    two = train.free_running(model, utts, mels, mel_cfg["hop_length"], "cpu", rep, seconds=0.1,
                               sample_rate=16000)
    assert [len(y) for y in one] == [700, 1600] and all(y.dtype == np.int16 for y in one)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
    train.save_free_running(str(tmp_path / "fr.npz"), utts, one, 7, 16000)
    z = np.load(tmp_path / "fr.npz")
    assert sorted(z.files) == ["sample_rate", "step", "v/a", "v/b"] and int(z["step"]) == 7


def test_missing_training_data_is_named_not_a_traceback(tmp_path):
    from models import train
    config = {"data": {"shards": str(tmp_path / "no-data")}}
    with pytest.raises(SystemExit, match=r"no training data in .*no-data: prepare it first"):
        train.load_utterances(config, None)
