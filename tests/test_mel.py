"""jitvoc.mel_spectrogram: frames, band placement, and bad input."""
import numpy as np
import pytest

from jitvoc import mel_spectrogram
from jitvoc.errors import InputError
from jitvoc.mel import DEFAULT_CONFIG, mel_filterbank
from jitvoc.model import MEL_24K

SR, HOP = 16000, DEFAULT_CONFIG["hop_length"]


def tone(freq, n, sr=SR, amp=0.5):
    return amp * np.sin(2 * np.pi * freq * np.arange(n) / sr)


@pytest.mark.parametrize("n, frames", [(1, 1), (HOP, 1), (HOP + 1, 2), (SR, SR // HOP),
                                       (SR + 7, SR // HOP + 1)])
def test_frame_count(n, frames):
    mel = mel_spectrogram(tone(440, n), SR)
    assert mel.shape == (frames, 80) and mel.dtype == np.float32


def test_int16_is_scaled():
    x = (tone(440, 4000) * 32767).astype(np.int16)
    np.testing.assert_allclose(mel_spectrogram(x, SR), mel_spectrogram(x / 32768.0, SR), atol=1e-5)


def test_silence_is_log_floor():
    mel = mel_spectrogram(np.zeros(1000, np.int16), SR)
    np.testing.assert_array_equal(mel, np.float32(np.log(1e-5)))


@pytest.mark.parametrize("freq", [300.0, 1000.0, 3500.0, 7000.0])
def test_tone_lands_in_its_band(freq):
    fbank = mel_filterbank(SR, 1024, 80, 40.0, 8000.0)
    bin_ = round(freq * 1024 / SR)
    expected = np.argmax(fbank[:, bin_])
    band = int(np.argmax(mel_spectrogram(tone(freq, SR), SR).mean(axis=0)))
    assert abs(band - expected) <= 1


def test_frames_are_centred_on_their_hop():
    x = np.zeros(20 * HOP)
    x[7 * HOP + HOP // 2] = 1.0  # an impulse at the centre of frame 7
    energy = np.exp(mel_spectrogram(x, SR)).sum(axis=1)
    assert np.argmax(energy) == 7
    assert energy[6] == pytest.approx(energy[8], rel=1e-4)  # symmetric about frame 7


def test_filters_have_unit_area():
    fbank = mel_filterbank(SR, 1024, 80, 40.0, 8000.0)
    area = fbank.sum(axis=1) * SR / 1024
    np.testing.assert_allclose(area[40:-1], 1.0, rtol=0.05)  # wide bands: the sum is an integral


def test_24k_config():
    mel = mel_spectrogram(tone(1000, 24000, sr=24000), 24000, MEL_24K)
    assert mel.shape == (80, 80)


@pytest.mark.parametrize("audio, sr, config, problem", [
    (np.zeros(0), SR, None, "empty"),
    (np.array([0.0, np.nan]), SR, None, "NaN"),
    (np.array([0.0, np.inf]), SR, None, "NaN or infinite"),
    (np.zeros((2, 100)), SR, None, "1-D"),
    (np.zeros(100, np.int32), SR, None, "int16 or float"),
    (np.zeros(100), 24000, None, "16000 Hz"),
    (np.zeros(100), SR, MEL_24K, "Nyquist"),
    (np.zeros(100), SR, {"n_fft": 512}, "lacks"),
    (np.zeros(100), SR, dict(DEFAULT_CONFIG, win_length=2048), "win_length <= n_fft"),
])
def test_bad_input(audio, sr, config, problem):
    with pytest.raises(InputError, match=problem):
        mel_spectrogram(audio, sr, config)


# --- the recipes of docs/model.md for librosa and torchaudio -------------------------------------
def _padded_for_recipes(audio, cfg):
    hop, n_fft = cfg["hop_length"], cfg["n_fft"]
    frames = -(-len(audio) // hop)
    x = np.pad(audio / 32768.0, (0, frames * hop - len(audio)))
    return np.pad(x, n_fft // 2, mode="reflect")[hop // 2:], frames


RECIPE_AUDIO = (np.random.default_rng(5).standard_normal(8037) * 3000).astype(np.int16)


def test_librosa_recipe_matches():
    librosa = pytest.importorskip("librosa")
    c = DEFAULT_CONFIG
    x, frames = _padded_for_recipes(RECIPE_AUDIO, c)
    S = np.abs(librosa.stft(x, n_fft=c["n_fft"], hop_length=c["hop_length"],
                            win_length=c["win_length"], window="hann", center=False))[:, :frames]
    fb = librosa.filters.mel(sr=16000, n_fft=c["n_fft"], n_mels=c["n_mels"], fmin=c["fmin"],
                             fmax=c["fmax"], norm="slaney", htk=False)
    mel = np.log(np.maximum(fb @ S, c["log_floor"]))
    np.testing.assert_allclose(mel.T, mel_spectrogram(RECIPE_AUDIO, 16000), atol=1e-5)


def test_torchaudio_recipe_matches():
    torch = pytest.importorskip("torch")
    torchaudio = pytest.importorskip("torchaudio")
    c = DEFAULT_CONFIG
    x, frames = _padded_for_recipes(RECIPE_AUDIO, c)
    spec = torchaudio.transforms.MelSpectrogram(
        16000, n_fft=c["n_fft"], win_length=c["win_length"], hop_length=c["hop_length"],
        f_min=c["fmin"], f_max=c["fmax"], n_mels=c["n_mels"], power=1.0, center=False,
        norm="slaney", mel_scale="slaney")(torch.from_numpy(x).float())[:, :frames]
    mel = torch.log(torch.clamp(spec, min=c["log_floor"])).numpy()
    np.testing.assert_allclose(mel.T, mel_spectrogram(RECIPE_AUDIO, 16000), atol=1e-4)
