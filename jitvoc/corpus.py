"""Corpus mode: many files vocoded on every core of this machine or on a Ray cluster.

Inputs (files, folders searched recursively, list files) become Items: a source, the kind of
input (a .npy log-mel or an audio file) and the output's name under the output folder. Every
file is vocoded exactly as `jitvoc synth` / `jitvoc resynth` vocode one file, so each output
equals the single-file result. Outputs are written atomically; a file that fails is reported
and the run goes on.

Locally this process loads the model (the kernels compiled once, or found in the cache) and
forks the other workers from it: they start at once, sharing its compiled code and model, and
this process vocodes too (jobs N: this one and N - 1 forked).
On Ray (`run_ray`) a Ray Data pipeline reads the files, vocodes them in actors that each load
the model once (`RayVocoder`), and the driver writes the WAVs (docs/corpus.md).
"""
from __future__ import annotations

import io
import logging
import os
import signal
import sys
import time
import warnings
from dataclasses import dataclass

import numpy as np

from .audio import check_output, decode_audio, make_output_folder, wav_bytes
from .atomic import atomic_file
from .blas import blas_threads
from .errors import JitvocError
from .mel import mel_spectrogram
from .optional import require
from .progress import progress_bar
from .vocoder import load

MEL_SUFFIXES = (".npy",)
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
                  ".au", ".caf", ".w64", ".rf64")
KINDS = {"mel": MEL_SUFFIXES, "audio": AUDIO_SUFFIXES}
log = logging.getLogger("jitvoc")


@dataclass(frozen=True)
class Item:
    source: str    # the input file
    name: str      # the output's path under the output folder
    kind: str      # "mel" or "audio"


@dataclass(frozen=True)
class Settings:
    """How every file is vocoded: the command line's --seed, --format, --mel-layout and
    --batch (files generated together, Vocoder.synthesize_batch: the same outputs)."""
    seed: int = 0
    format: str = "int16"
    mel_layout: str = "frames-mels"
    batch: int = 1


@dataclass(frozen=True)
class Result:
    item: Item
    audio_s: float = 0.0          # seconds of audio written
    error: str | None = None      # why the file failed
    notes: tuple = ()             # what reading changed (channels mixed down, resampled)


# --- the corpus -------------------------------------------------------------------------------
def usable_cores() -> int:
    return len(os.sched_getaffinity(0))


def collect(inputs, kinds=("mel", "audio"), list_file=None) -> list[Item]:
    """Items for input paths (files; folders, searched recursively for files of `kinds`) and the
    lines of `list_file` (one path a line, relative to the list's folder; '#' comments).
    A file's output keeps its path relative to the folder or list it came from."""
    found = []
    if list_file is not None:
        found += _listed(list_file, kinds)
    for path in map(os.fspath, inputs):
        if os.path.isdir(path):
            found += _walk(path, kinds)
        else:
            found.append(_item(path, os.path.dirname(path), kinds))
    if not found:
        raise JitvocError(f"no input files found (looked for {', '.join(_suffixes(kinds))})")
    _check_unique(found)
    return found


def _suffixes(kinds) -> tuple:
    return tuple(s for k in kinds for s in KINDS[k])


def _item(path, root, kinds) -> Item:
    """The Item of `path`, its output named by its path relative to `root` (else its name)."""
    rel = os.path.relpath(path, root or ".")
    if rel.startswith(os.pardir):
        rel = os.path.basename(path)
    suffix = os.path.splitext(path)[1].lower()
    kind = next((k for k in kinds if suffix in KINDS[k]), kinds[-1])
    return Item(path, os.path.splitext(rel)[0] + ".wav", kind)


def _walk(folder, kinds) -> list[Item]:
    suffixes = _suffixes(kinds)
    items = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        items += [_item(os.path.join(root, f), folder, kinds) for f in sorted(files)
                  if f.lower().endswith(suffixes) and not f.startswith(".")]
    return items


def _listed(list_file, kinds) -> list[Item]:
    try:
        with open(list_file, encoding="utf-8") as f:
            lines = [line.strip() for line in f]
    except FileNotFoundError:
        raise JitvocError(f"{list_file}: no such list file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise JitvocError(f"{list_file}: cannot read the list: {e}") from None
    base = os.path.dirname(os.fspath(list_file))
    return [_item(os.path.join(base, line), base, kinds)
            for line in lines if line and not line.startswith("#")]


def _check_unique(items) -> None:
    seen = {}
    for item in items:
        other = seen.setdefault(item.name, item.source)
        if other != item.source:
            raise JitvocError(f"{other} and {item.source} would both be written to "
                              f"{item.name}: rename one, or give them in separate runs")


def prepare_output(out_dir) -> None:
    """Create the output folder; refuse a path that exists and is not a folder."""
    make_output_folder(out_dir, "with several inputs -o names the folder the outputs go to")


# --- one file ---------------------------------------------------------------------------------
def read_bytes(path) -> bytes:
    """The bytes of a file, or of stdin for '-'."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise JitvocError(f"{path}: no such file") from None
    except OSError as e:
        raise JitvocError(f"{path}: cannot read it: {e}") from None


def decode_mel(data: bytes, name: str) -> np.ndarray:
    """The .npy array in `data`, its header checked before anything is allocated."""
    from . import npy   # here: resynth reads no .npy
    try:
        header = npy.read_header(io.BytesIO(data))
        return npy.array_from(data[header.offset:], header)
    except npy.NpyError as e:
        raise JitvocError(f"{name}: not a readable .npy array: {e}") from None


def prepare(vocoder, kind, data: bytes, name: str, mel_layout: str):
    """(mel [frames, n_mels], samples to keep, notes) for the bytes of an input of `kind`:
    a .npy mel in `mel_layout`, or an audio file (its mel; its length is kept)."""
    if kind == "mel":
        mel = vocoder.frames_first(decode_mel(data, name), mel_layout)
        return mel, len(mel) * vocoder.hop_length, []
    audio, rate, notes = decode_audio(data, name, vocoder.sample_rate)
    if len(audio) == 0:
        raise JitvocError(f"{name} holds no samples")
    return mel_spectrogram(audio, rate, vocoder.model.mel_config), len(audio), notes


def vocode(vocoder, kind, data: bytes, name: str, settings: Settings):
    """(WAV bytes, seconds of audio, notes) for the bytes of one input."""
    result = vocode_many(vocoder, [(kind, data, name)], settings)[0]
    if isinstance(result, Exception):
        raise result
    return result


def vocode_many(vocoder, inputs, settings: Settings) -> list:
    """For inputs [(kind, bytes, name)], each one's (WAV bytes, seconds of audio, notes) or
    the exception it raised; the mels generated settings.batch at a time
    (Vocoder.synthesize_batch: each output as `vocode` gives it alone). If the batch fails,
    each mel is vocoded alone, so that a bad one fails by itself."""
    out, prepared = [None] * len(inputs), []
    for j, (kind, data, name) in enumerate(inputs):
        try:
            prepared.append((j, *prepare(vocoder, kind, data, name, settings.mel_layout)))
        except Exception as e:   # reported per file
            out[j] = e
    try:
        audios = vocoder.synthesize_batch([p[1] for p in prepared], seeds=settings.seed,
                                          batch=settings.batch)
    except Exception:
        audios = [None] * len(prepared)
    for (j, mel, n_samples, notes), audio in zip(prepared, audios):
        try:
            audio = (vocoder.synthesize(mel, seed=settings.seed) if audio is None
                     else audio)[:n_samples]
            out[j] = (wav_bytes(audio, vocoder.sample_rate, settings.format),
                      len(audio) / vocoder.sample_rate, tuple(notes))
        except Exception as e:
            out[j] = e
    return out


def _failure(item, error) -> Result:
    """A Result for a file that failed; the message names the file."""
    message = str(error) if isinstance(error, JitvocError) else \
        f"internal error: {type(error).__name__}: {error}"
    if item.source not in message:
        message = f"{item.source}: {message}"
    return Result(item, error=message)


def write_output(out_dir, item, data: bytes) -> None:
    path = os.path.join(out_dir, item.name)
    os.makedirs(os.path.dirname(path), exist_ok=True)   # first: check_output wants its folder
    check_output(path, [item.source])
    with atomic_file(path, JitvocError) as f:
        f.write(data)


def vocode_files(vocoder, items, settings) -> list:
    """For items, each one's (WAV bytes, seconds of audio, notes) or the exception its reading
    or vocoding raised (vocode_many: settings.batch at a time)."""
    read = {}
    for item in items:
        try:
            read[item] = read_bytes(item.source)
        except Exception as e:
            read[item] = e
    readable = [item for item in items if not isinstance(read[item], Exception)]
    # One BLAS thread (the mels of audio inputs, the conditioning): a corpus runs a worker per
    # core, and idle BLAS threads spin on the cores the other workers vocode on.
    with blas_threads(1):
        done = dict(zip(readable, vocode_many(vocoder, [(i.kind, read[i], i.source)
                                                        for i in readable], settings)))
    return [done.get(item, read[item]) for item in items]


def process(vocoder, items, out_dir, settings) -> list[Result]:
    """Vocode files (settings.batch at a time) into the output folder, a Result each; a
    failure comes back as a Result."""
    return [_written(item, out_dir, vocoded)
            for item, vocoded in zip(items, vocode_files(vocoder, items, settings))]


def _written(item, out_dir, vocoded) -> Result:
    """The Result of one file, its WAV written (vocoded: vocode's triple, or an exception)."""
    try:
        if isinstance(vocoded, Exception):
            raise vocoded
        data, seconds, notes = vocoded
        write_output(out_dir, item, data)
        return Result(item, seconds, notes=notes)
    except Exception as e:   # every failure of one file is reported, the run goes on
        return _failure(item, e)


# --- progress and the summary ----------------------------------------------------------------
class Tally:
    """Counts results, moves the bar (files, seconds of audio, x realtime), logs failures."""

    def __init__(self, total: int, progress: bool = True):
        self.total, self.start = total, time.perf_counter()
        self.audio_s, self.done, self.failed, self.noted = 0.0, 0, [], 0
        self.bar = progress_bar(total, unit="file", enabled=progress)

    def add(self, result: Result) -> None:
        self.done += 1
        if result.error:
            self.failed.append(result)
            log.error(f"error: {result.error}")
        else:
            self.audio_s += result.audio_s
        if result.notes:
            self.noted += 1
            log.debug(f"note: {result.item.source}: {', '.join(result.notes)}")
        self.bar.set_postfix_str(f"{self.audio_s:.1f} s of audio, {self.speed():.1f}x realtime",
                                 refresh=False)
        self.bar.update(1)

    def wall(self) -> float:
        return time.perf_counter() - self.start

    def speed(self) -> float:
        """Seconds of audio per second of wall time."""
        return self.audio_s / max(self.wall(), 1e-9)

    def finish(self, out_dir, how: str) -> int:
        """Close the bar, log the summary; the exit status: 1 if any file failed."""
        self.bar.close()
        written = self.done - len(self.failed)
        log.info(f"wrote {written} of {self.total} files to {out_dir}: {self.audio_s:.2f} s of "
                 f"audio in {self.wall():.2f} s = {self.speed():.1f}x realtime ({how})")
        if self.noted:
            log.info(f"note: {self.noted} input{'s were' if self.noted > 1 else ' was'} mixed "
                     f"down or resampled (-v names them)")
        if self.failed:
            log.error(f"{len(self.failed)} of {self.total} files failed: "
                      + ", ".join(r.item.source for r in self.failed[:5])
                      + (", ..." if len(self.failed) > 5 else ""))
            return 1
        return 0


# --- every core of this machine ------------------------------------------------------------------
def run(model, items, out_dir, settings=Settings(), jobs=None, report=None, **load_args):
    """Vocode `items` into `out_dir` on `jobs` processes (default: the usable cores): this one
    and jobs - 1 forked from it once the model is loaded; each Result goes to `report` as it
    arrives. `model` and `load_args` (cpu, dtype, engine) as jitvoc.load takes them."""
    report = report or (lambda result: None)
    if jobs is not None and jobs < 1:
        raise JitvocError(f"--jobs must be at least 1, got {jobs}")
    jobs = min(jobs or usable_cores(), len(items))
    prepare_output(out_dir)
    vocoder = load(model, **load_args)
    if jobs > 1:
        vocoder.prepare_batch(settings.batch)   # inherited by the forked workers
    _run_processes(vocoder, _groups(_longest_first(items), settings.batch), out_dir, settings,
                   jobs, report)


def _groups(items, size: int) -> list[list[Item]]:
    """Consecutive groups of `size` items (of similar lengths when sorted longest first: the
    streams of a batch end close together)."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def _longest_first(items) -> list[Item]:
    """Items by decreasing file size, so that no long file starts last (better balance)."""
    def size(item):
        try:
            return os.path.getsize(item.source)
        except OSError:
            return 0
    return sorted(items, key=size, reverse=True)


def _run_processes(vocoder, groups, out_dir, settings, jobs, report) -> None:
    """Vocode the groups here and in jobs - 1 worker processes forked now, each process taking
    the next group when it is free. Forked after the load, the workers start at once with the
    compiled code and the model of this process (no interpreter to start, nothing to load:
    spawned ones took 0.3-0.5 s each, while this process idled)."""
    import multiprocessing   # here: a single file's command does not need it (6 ms of CPU)
    ctx = multiprocessing.get_context("fork")
    results, taken = ctx.Queue(), ctx.Value("i", 0)
    workers = [ctx.Process(target=_worker, args=(vocoder, groups, taken, out_dir, settings,
                                                 results), daemon=True)
               for _ in range(jobs - 1)]
    for w in workers:
        w.start()
    try:
        remaining = sum(map(len, groups))
        for group in _next_groups(groups, taken):
            for result in process(vocoder, group, out_dir, settings):
                report(result)
                remaining -= 1
            remaining -= _collect(results, workers, report, timeout=0)
        while remaining:
            remaining -= _collect(results, workers, report, timeout=0.5)
        for w in workers:   # done: each exits when no group is left
            w.join(timeout=10)
    finally:
        _stop(workers)


def _next_groups(groups, taken):
    """The groups this process takes, one at a time, from the shared counter `taken`."""
    while True:
        with taken.get_lock():
            i = taken.value
            taken.value = i + 1
        if i >= len(groups):
            return
        yield groups[i]


def _collect(results, workers, report, timeout: float) -> int:
    """Report the workers' Results that have arrived (waiting up to `timeout` for the first);
    how many. A worker that died is an error."""
    import queue   # with multiprocessing (_run_processes): not for a single file
    n = 0
    while True:
        try:
            result = results.get(timeout=timeout) if timeout else results.get_nowait()
        except queue.Empty:
            if not n:
                _check_alive(workers)
            return n
        report(result)
        n, timeout = n + 1, 0


def _check_alive(workers) -> None:
    for w in workers:
        if w.exitcode not in (None, 0):
            raise JitvocError(f"a worker process died (exit status {w.exitcode}); the outputs "
                              f"written so far are complete")


def _stop(workers) -> None:
    """Stop the workers: SIGTERM lets one that is writing remove its temporary file."""
    for w in workers:
        if w.is_alive():
            w.terminate()
    for w in workers:
        w.join(timeout=2)
        if w.is_alive():
            w.kill()
            w.join()


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _worker(vocoder, groups, taken, out_dir, settings, results) -> None:
    """A worker process, forked with the loaded vocoder: vocode groups until none is left."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and stops us
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    for group in _next_groups(groups, taken):
        for result in process(vocoder, group, out_dir, settings):
            results.put(result)


# --- many machines: Ray Data ---------------------------------------------------------------------
class RayVocoder:
    """The Ray Data actor: loads the model once, then reads and vocodes batches of rows {path}
    into rows {path, wav, audio_s, notes, error} (batch_format "numpy")."""

    def __init__(self, model, kinds: dict, settings: Settings, load_args: dict):
        self.vocoder = load(model, **load_args)
        self.kinds, self.settings = kinds, settings

    def __call__(self, batch: dict) -> dict:
        out = {"path": [], "wav": [], "audio_s": [], "notes": [], "error": []}
        items = [Item(path, "", self.kinds[path]) for path in batch["path"]]
        for item, vocoded in zip(items, vocode_files(self.vocoder, items, self.settings)):
            if isinstance(vocoded, Exception):   # reported per file; the pipeline goes on
                wav, seconds, notes = b"", 0.0, ()
                error = _failure(item, vocoded).error
            else:
                (wav, seconds, notes), error = vocoded, ""
            for key, value in zip(out, (item.source, wav, seconds, "; ".join(notes), error)):
                out[key].append(value)
        return {k: np.array(v, dtype=object if k != "audio_s" else np.float64)
                for k, v in out.items()}


def pipeline(model, items, settings=Settings(), workers=None, **load_args):
    """The Ray Data pipeline (lazy): the files' paths, one row and one block each, read and
    vocoded by `workers` RayVocoder actors of one CPU each (default: the cluster's CPUs). Ray
    must be initialised."""
    ray = require("ray", "running on Ray", "'jitvoc[ray]'")
    require("ray.data", "running on Ray", "'jitvoc[ray]'")
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    # The actors read the files: read tasks would each start a Ray worker process of their
    # own (seconds of CPU apiece, 8 of them for 16 files on 2 CPUs). One block per file: Ray
    # Data hands an actor whole blocks, so blocks of several files would go to one actor
    # together (no balance) and come back together (late, in bursts).
    kinds = {os.path.abspath(item.source): item.kind for item in items}
    files = ray.data.from_items([{"path": path} for path in kinds],
                                override_num_blocks=len(kinds))
    # A fixed pool of one-CPU actors, each holding one file (settings.batch files) in hand and
    # the next queued: with one at a time each actor idled a third of the time between files
    # (random_model(896), 3 s files: 60-65% CPU per actor; 2 workers 12.3x realtime against
    # 18.2x with the next queued), at the cost of at most one file of imbalance at the end.
    # (`concurrency=` is deprecated since Ray 2.51.)
    actors = ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=2)
    # No restarts: an actor whose process dies ends the run, as a dead worker process does
    # with --jobs (the outputs written so far are complete), rather than being restarted and
    # retried without end on a file that kills it. With Ray Data's default (restarts without
    # end) Ray's core logged an error on stderr for every actor: Ray Data passes an actor its
    # context and its function through the object store (ray-project/ray#57733). Ray 2.60
    # takes max_restarts only among the remote arguments it has deprecated, with a warning.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")
        return files.map_batches(RayVocoder, batch_size=settings.batch, batch_format="numpy",
                                 fn_constructor_args=(model, kinds, settings, load_args),
                                 compute=actors, num_cpus=1, max_restarts=0)


def init_ray(address=None, **init_args):
    """Ray, imported and initialised unless it was: joined to the cluster at `address` (else
    $RAY_ADDRESS), else a local instance started (`init_args` as ray.init takes them), with
    Ray's own messages down to its warnings and errors. A local instance gets token
    authentication, Ray's default for one, chosen here (unless $RAY_AUTH_MODE is set, and only
    before Ray's import, which reads it) so that Ray does not warn that it chose it."""
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    if address == "local" and "ray" not in sys.modules:
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    ray = require("ray", "running on Ray", "'jitvoc[ray]'")
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, include_dashboard=False,
                     logging_level=_ray_log_level(), **init_args)
        except ConnectionError as e:   # no cluster at `address` (or none running, for auto)
            raise JitvocError(f"cannot join the Ray cluster at {address}: {e}") from None
    return ray


def _ray_log_level() -> int:
    """Ray's and Ray Data's notes (INFO) on stderr only when jitvoc's debug messages are on
    (`jitvoc -v`); their warnings and errors always."""
    return logging.INFO if log.isEnabledFor(logging.DEBUG) else logging.WARNING


def quiet_ray_data(context) -> None:
    """Ray Data's progress bars off in the DataContext `context`, and its warning that they
    are: jitvoc's bar reports (Ray Data's would cost the driver CPU, on the cores the actors
    vocode on in a local instance); its notes as _ray_log_level says (set after `ray.data`'s
    import, which sets its logger's level)."""
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(_ray_log_level())
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)


def run_ray(model, items, out_dir, settings=Settings(), workers=None, report=None,
            address=None, **load_args) -> None:
    """`run` on Ray: the pipeline's results come back to this process, which writes them.
    Ray is started here (init_ray(address)) unless it is already initialised."""
    report = report or (lambda result: None)
    prepare_output(out_dir)
    # A bad model or CPU fails here, not in every actor; the actors get the Model itself, so
    # that the machines of a cluster need no copy of its file. Its engine is built (read from
    # the cache) on a thread while Ray starts.
    vocoder = load(model, background=True, **load_args)
    ray = init_ray(address)
    model = vocoder.ready().model
    readable = []
    for item in items:
        if os.path.isfile(item.source):
            readable.append(item)
        else:
            report(_failure(item, JitvocError(f"{item.source}: no such file")))
    if not readable:
        return
    by_path = {os.path.abspath(item.source): item for item in readable}
    # Longest first, as on processes: the last files sent are the shortest, so that the
    # actors end close together.
    ds = pipeline(model, _longest_first(readable), settings, workers, **load_args)
    quiet_ray_data(ds.context)
    try:
        for row in ds.iter_rows():
            report(_row_written(out_dir, by_path[row["path"]], row))
    # An actor is not restarted (pipeline); Ray's memory monitor kills workers when the node
    # runs low on memory, which ends the run with OutOfMemoryError instead.
    except (ray.exceptions.ActorDiedError, ray.exceptions.OutOfMemoryError) as e:
        raise JitvocError(f"a Ray actor died ({str(e).splitlines()[0]}); the outputs "
                          f"written so far are complete") from None


def _row_written(out_dir, item, row) -> Result:
    """The Result of one row of the pipeline, its WAV written."""
    if row["error"]:
        return Result(item, error=row["error"])
    try:
        write_output(out_dir, item, row["wav"])
    except JitvocError as e:
        return _failure(item, e)
    return Result(item, row["audio_s"], notes=tuple(row["notes"].split("; ")) if row["notes"]
                  else ())
