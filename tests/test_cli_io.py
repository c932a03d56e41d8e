"""Audio input and output, and the command line's conventions (issue 11, item 6): soundfile reads
any common format, '-' means stdin/stdout, -o replaces only a regular file that is not the input,
signals and closed pipes leave no files behind, --version, full-sentence help, -v/-q."""
import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import jitvoc
from jitvoc.audio import check_output, read_audio, write_audio
from jitvoc.cli import build_parser, main
from jitvoc.errors import InputError, JitvocError
from jitvoc.model import random_model
from jitvoc.reference.vocoder import ReferenceEngine

ROOT = Path(__file__).resolve().parent.parent
SR = 16000
AUDIO = (np.random.default_rng(0).standard_normal(SR // 4) * 4000).astype(np.int16)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.npz"
    random_model(hidden=32, density=0.25, sample_rate=SR, n_mels=8, cond_channels=8).save(path)
    return path


@pytest.fixture
def mel(model_path, tmp_path):
    path = tmp_path / "mel.npy"
    np.save(path, np.random.default_rng(1).normal(-4, 2, (6, 8)).astype(np.float32))
    return path


def cli(*argv) -> int:
    """jitvoc.cli.main in this process."""
    return main([str(a) for a in argv])


def run(*argv, stdin=None, env=None):
    """`python -m jitvoc argv` in a fresh process, from outside the checkout."""
    return subprocess.run([sys.executable, "-m", "jitvoc", *map(str, argv)], input=stdin,
                          capture_output=True, timeout=300, cwd="/",
                          env=dict(os.environ, PYTHONPATH=str(ROOT), **(env or {})))


# --- reading audio ---------------------------------------------------------------------------------
def test_pcm16_wav_round_trip_is_exact(tmp_path):
    write_audio(tmp_path / "a.wav", AUDIO, SR)
    back, rate, notes = read_audio(tmp_path / "a.wav")
    np.testing.assert_array_equal(back, AUDIO)
    assert rate == SR and notes == [] and os.listdir(tmp_path) == ["a.wav"]


@pytest.mark.parametrize("fmt,subtype", [("WAV", "PCM_24"), ("WAV", "FLOAT"), ("WAV", "PCM_U8"),
                                         ("FLAC", "PCM_16"), ("OGG", "VORBIS")])
def test_common_formats_are_read(tmp_path, fmt, subtype):
    path = tmp_path / f"a.{fmt.lower()}"
    sf.write(path, AUDIO / 32768.0, SR, format=fmt, subtype=subtype)
    back, rate, _ = read_audio(path)
    assert rate == SR and len(back) == len(AUDIO)
    tolerance = {"PCM_U8": 300, "VORBIS": 2000}.get(subtype, 1)
    assert np.abs(back.astype(np.int32) - AUDIO).mean() <= tolerance


def test_stereo_is_mixed_down_and_other_rates_resampled(tmp_path):
    path = tmp_path / "s.wav"
    stereo = np.stack([AUDIO, AUDIO // 2], axis=1)
    sf.write(path, stereo, 24000, subtype="PCM_16")
    back, rate, notes = read_audio(path, sample_rate=SR)
    assert rate == SR and abs(len(back) - len(AUDIO) * 2 // 3) <= 1
    assert notes == ["mixed 2 channels down to mono", "resampled from 24000 Hz to 16000 Hz"]


@pytest.mark.parametrize("content,message", [(b"not audio at all", "not a readable audio file"),
                                             (None, "no such file")])
def test_unreadable_audio(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(JitvocError, match=message):
        read_audio(path)


# --- writing audio ---------------------------------------------------------------------------------
def test_float32_output_is_in_unit_range(tmp_path):
    write_audio(tmp_path / "f.wav", AUDIO, SR, "float32")
    data, rate = sf.read(tmp_path / "f.wav", dtype="float32")
    assert sf.info(tmp_path / "f.wav").subtype == "FLOAT" and rate == SR
    np.testing.assert_array_equal(data, AUDIO.astype(np.float32) / 32768)


def test_write_is_atomic(tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(sf, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_audio(tmp_path / "a.wav", AUDIO, SR)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("audio,rate,fmt", [(AUDIO.astype(np.float32), SR, "int16"),
                                            (AUDIO, 0, "int16"), (AUDIO, SR, "int24")])
def test_write_checks_its_arguments(tmp_path, audio, rate, fmt):
    with pytest.raises(InputError):
        write_audio(tmp_path / "a.wav", audio, rate, fmt)


# --- where -o may write ---------------------------------------------------------------------------
def test_output_must_be_a_new_path_or_a_regular_file(tmp_path):
    target = tmp_path / "real.wav"
    target.write_bytes(b"x")
    (tmp_path / "link.wav").symlink_to(target)
    os.mkfifo(tmp_path / "fifo.wav")
    check_output(tmp_path / "new.wav")
    check_output(target)
    check_output("-")
    for path, kind in (("/dev/null", "device"), (tmp_path / "link.wav", "symbolic link"),
                       (tmp_path / "fifo.wav", "FIFO"), (tmp_path, "folder")):
        with pytest.raises(JitvocError, match=f"refusing to replace .*{kind}"):
            check_output(path)


def test_output_must_not_be_the_input(tmp_path):
    source = tmp_path / "in.wav"
    source.write_bytes(b"x")
    os.link(source, tmp_path / "same.wav")
    for path in (source, tmp_path / "same.wav", tmp_path / "." / "in.wav"):
        with pytest.raises(JitvocError, match="it is the input file"):
            check_output(path, [str(source)])


def test_resynth_refuses_to_overwrite_its_input(model_path, tmp_path, capsys):
    write_audio(tmp_path / "in.wav", AUDIO, SR)
    before = (tmp_path / "in.wav").read_bytes()
    assert cli("resynth", model_path, str(tmp_path / "in.wav"), "-o",
                 str(tmp_path / "in.wav")) == 2
    assert "it is the input file" in capsys.readouterr().err
    assert (tmp_path / "in.wav").read_bytes() == before


# --- synth and resynth --------------------------------------------------------------------------
def test_synth_and_resynth(model_path, mel, tmp_path, capsys):
    out = tmp_path / "out.wav"
    assert cli("synth", model_path, mel, "-o", out, "--backend", "reference", "--seed", "2") == 0
    samples, rate, _ = read_audio(out)
    voc = jitvoc.load(model_path, engine=ReferenceEngine)
    np.testing.assert_array_equal(samples, voc.synthesize(np.load(mel), 2))
    assert "x realtime" in capsys.readouterr().err
    sf.write(tmp_path / "in.flac", samples[:-7], 24000, subtype="PCM_16")
    assert cli("resynth", model_path, tmp_path / "in.flac", "-o", tmp_path / "re.wav",
                 "--format", "float32") == 0
    err = capsys.readouterr().err
    assert "note: " in err and "resampled from 24000 Hz to 16000 Hz" in err
    assert sf.info(tmp_path / "re.wav").subtype == "FLOAT"


def test_mel_layouts(model_path, mel, tmp_path):
    voc = jitvoc.load(model_path, dtype="float32")
    frames_first = np.load(mel)
    want = voc.synthesize(frames_first, seed=1)
    np.testing.assert_array_equal(voc.synthesize(frames_first.T, seed=1, layout="mels-frames"),
                                  want)
    batch = voc.synthesize(np.stack([frames_first.T] * 2), seed=1, layout="mels-frames")
    assert batch.shape == (2, len(want)) and (batch == want).all()
    with pytest.raises(InputError, match=r"mels-frames mel must be \[8, frames\]"):
        voc.synthesize(frames_first, layout="mels-frames")
    with pytest.raises(InputError, match="batch of mels is empty"):   # found by fuzzing
        voc.synthesize(np.zeros((0, 8, 5), np.float32), layout="mels-frames")
    np.save(tmp_path / "t.npy", frames_first.T)
    assert cli("synth", model_path, tmp_path / "t.npy", "-o", tmp_path / "t.wav",
                 "--dtype", "float32", "--seed", "1", "--mel-layout", "mels-frames") == 0
    np.testing.assert_array_equal(read_audio(tmp_path / "t.wav")[0], want)


def test_dash_means_stdin_and_stdout(model_path, mel, tmp_path):
    r = run("synth", model_path, "-", "-o", "-", "--seed", "2", stdin=mel.read_bytes())
    assert r.returncode == 0, r.stderr
    assert r.stdout[:4] == b"RIFF" and not (Path("/") / "-").exists()
    (tmp_path / "piped.wav").write_bytes(r.stdout)
    assert cli("synth", model_path, mel, "-o", tmp_path / "file.wav", "--seed", "2") == 0
    assert (tmp_path / "file.wav").read_bytes() == r.stdout
    r = run("resynth", model_path, "-", "-o", "-", stdin=r.stdout)
    assert r.returncode == 0 and r.stdout[:4] == b"RIFF", r.stderr


# --- signals and pipes ----------------------------------------------------------------------------
TERMINATED_WHILE_WRITING = """
import os, signal, sys
import jitvoc.audio
from jitvoc.cli import main
real = jitvoc.audio.atomic_file
class Killed:
    def __init__(self, f): self.f = f
    def write(self, data):
        self.f.write(data[:100])
        os.kill(os.getpid(), signal.SIG{name})
        self.f.write(data[100:])
class Wrapped:
    def __init__(self, *a, **k): self.cm = real(*a, **k)
    def __enter__(self): return Killed(self.cm.__enter__())
    def __exit__(self, *exc): return self.cm.__exit__(*exc)
jitvoc.audio.atomic_file = Wrapped
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name,code", [("TERM", 128 + signal.SIGTERM), ("INT", 130)])
def test_signal_while_writing_leaves_no_file(model_path, mel, tmp_path, name, code):
    out = tmp_path / "out"
    out.mkdir()
    script = textwrap.dedent(TERMINATED_WHILE_WRITING).replace("{name}", name)
    r = subprocess.run([sys.executable, "-c", script, "synth", str(model_path), str(mel), "-o",
                        str(out / "o.wav")], capture_output=True, text=True, timeout=300,
                       cwd="/", env=dict(os.environ, PYTHONPATH=str(ROOT)),
                       # a shell's background job ignores SIGINT, and its children inherit that
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert r.returncode == code, r.stderr
    assert os.listdir(out) == []
    assert "Traceback" not in r.stderr


def test_closed_pipe_is_quiet():
    r = subprocess.run(f"{sys.executable} -m jitvoc info --json | head -c 1", shell=True,
                       capture_output=True, text=True, timeout=300, cwd="/",
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.stdout == "{" and r.stderr == ""


# --- conventions ------------------------------------------------------------------------------------
def test_version():
    r = run("--version")
    assert r.returncode == 0 and r.stdout.decode().strip() == f"jitvoc {jitvoc.__version__}"


def _subparsers(parser):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            for name, sub in action.choices.items():
                yield name, sub
                yield from _subparsers(sub)


def test_every_help_is_in_full_sentences():
    parsers = [("jitvoc", build_parser())]
    parsers += list(_subparsers(parsers[0][1]))
    assert len(parsers) >= 10
    for name, parser in parsers:
        text = parser.description or ""
        assert text[:1].isupper() and text.rstrip().endswith("."), (name, text)


def test_bench_options_before_scan_are_refused(capsys, tmp_path):
    assert cli("bench", "--quick", "--json", str(tmp_path / "f.json"), "scan") == 2
    err = capsys.readouterr().err
    assert "--quick, --json" in err and "after 'scan'" in err


@pytest.mark.parametrize("flags,shown", [([], True), (["-q"], False)])
def test_quiet_hides_the_summary(model_path, mel, tmp_path, flags, shown):
    r = run(*flags, "synth", model_path, mel, "-o", tmp_path / "o.wav")
    assert r.returncode == 0 and (b"wrote " in r.stderr) == shown, r.stderr


def test_verbose_shows_the_plan(model_path, mel, tmp_path):
    r = run("-v", "synth", model_path, mel, "-o", tmp_path / "o.wav", env={"JITVOC_DEBUG": ""})
    assert r.returncode == 0 and b"plan " in r.stderr, r.stderr


def _npy_header(shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": shape})
    return buf.getvalue()


@pytest.mark.parametrize("content,message", [
    (_npy_header((2**33, 8)) + bytes(64), "header promises 274877906944"),
    (_npy_header((3, 8)) + bytes(64), "64 data bytes, but the header promises 96"),
    (b"PK\x03\x04 an npz", "no valid .npy header"),
])
def test_mel_file_header_is_checked_before_allocating(model_path, tmp_path, capsys, content,
                                                      message):
    (tmp_path / "m.npy").write_bytes(content)
    assert cli("synth", model_path, tmp_path / "m.npy", "-o", tmp_path / "o.wav") == 2
    assert message in capsys.readouterr().err


def test_empty_audio_still_reports_the_asked_rate(tmp_path):
    """Found by fuzzing: an empty file at another rate came back with its own rate."""
    sf.write(tmp_path / "e.wav", np.zeros(0), 24000, subtype="PCM_16")
    audio, rate, notes = read_audio(tmp_path / "e.wav", sample_rate=SR)
    assert len(audio) == 0 and rate == SR and notes == ["resampled from 24000 Hz to 16000 Hz"]
