"""The `jitvoc` command. Each subcommand lives in a module of this package with a
`register(subparsers)` function that adds its parser and sets `func(args) -> int`.

Conventions: results on stdout, messages on stderr through Python logging (-v for more, down to
the JITVOC_DEBUG levels, -q for warnings and errors only); '-' names stdin or stdout; SIGTERM,
SIGINT and a closed pipe end the command without leaving partial or temporary files.
"""
import argparse
import gc
import importlib
import logging
import os
import signal
import sys
import warnings

from .. import __version__
from ..errors import JitvocError

# command -> the module of this package that registers it (synth: synth, resynth and corpus)
COMMANDS = {"info": "info", "models": "models", "kernels": "kernels", "synth": "synth",
            "resynth": "synth", "corpus": "synth", "bench": "bench", "cache": "cache"}
DESCRIPTION = ("Run pruned, quantized WaveRNN vocoders compiled into machine code for this CPU: "
               "turn mel spectrograms into audio, list the installed models, dump the kernels "
               "jitvoc writes, benchmark them, and show or empty the cache of compiled code.")
log = logging.getLogger("jitvoc")


def build_parser(argv=None) -> argparse.ArgumentParser:
    """The parser of `argv`'s command: only the module that registers it is imported (none for
    --version, every module when argv is None or names no command: --help, a typo). Imports
    are most of a command's fixed cost: `bench` alone brought in the cell compiler, 0.1-0.2 s
    before `resynth` could start, and every module 0.3 s before --version printed."""
    parser = argparse.ArgumentParser(prog="jitvoc", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"jitvoc {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more messages on stderr; -v shows the plan (JITVOC_DEBUG=1), "
                             "-vv compile timings (2), -vvv the IR (3)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _modules(argv):
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def _modules(argv) -> list:
    """The modules to register for `argv`: its command's; none for --version alone (argparse
    prints it before it asks for a command); else all of them."""
    command, argv = _command(argv), argv or ()
    if command in COMMANDS:
        return [COMMANDS[command]]
    if command is None and "--version" in argv and not {"-h", "--help"} & set(argv):
        return []
    return list(dict.fromkeys(COMMANDS.values()))


def _command(argv):
    """The command `argv` names (its first argument that is no option), or None."""
    return next((a for a in argv or () if not a.startswith("-")), None)


def configure_logging(verbose: int, quiet: bool) -> None:
    """-q: warnings; default: info; -v...: debug, and JITVOC_DEBUG raised to the count of v."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(format="jitvoc: %(message)s", level=level, stream=sys.stderr,
                        force=True)
    warnings.showwarning = _log_warning
    if verbose and int(os.environ.get("JITVOC_DEBUG") or 0) < verbose:
        os.environ["JITVOC_DEBUG"] = str(verbose)


def _log_warning(message, category, filename, lineno, file=None, line=None):
    log.warning(str(message))


def _terminate(signum, frame):
    """SIGTERM as an exception, so that every `finally` (temporary files) runs."""
    raise SystemExit(128 + signum)


# OpenBLAS reads these at numpy's import; one of them set is the user's choice
BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def main(argv=None) -> int:
    """The command on `argv` (None: sys.argv, this process being the command: see
    _as_process)."""
    if argv is None:
        return _as_process(sys.argv[1:])
    return _run(list(argv), build_parser(argv))


def _as_process(argv) -> int:
    """The command as a process of its own, set up for a short life:

    - NumPy's OpenBLAS with one thread, unless a variable of BLAS_THREAD_VARIABLES says
      otherwise: jitvoc's NumPy work runs on one BLAS thread anyway (blas.blas_threads), and
      the pool of threads OpenBLAS starts at numpy's import cost ~0.1 s of a warm `resynth`'s
      CPU time (45 ms importing numpy, the rest a second thread spinning); children (the
      corpus's workers, the compile workers) inherit it. Not for `bench`, which times the
      library as a program that imports it gets it (its `resynth` runs get it, as commands);
    - the cyclic collector off while the command's modules are imported, and what they made
      frozen (gc.freeze) after, so that no later collection walks it again: 30 ms of CPU.
    """
    if _command(argv) != "bench" and not any(os.environ.get(v) for v in BLAS_THREAD_VARIABLES):
        os.environ["OPENBLAS_NUM_THREADS"] = "1"
    gc.disable()
    try:
        parser = build_parser(argv)
    finally:
        gc.freeze()
        gc.enable()
    return _run(argv, parser)


def _run(argv: list, parser) -> int:
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "bench":
            bench = importlib.import_module(f"{__name__}.bench")   # registered: imported
            if args.bench_command in bench.OWN_OPTIONS:
                bench.refuse_options_before(args.bench_command, argv)
            bench.check_outputs(args)
        return args.func(args) or 0
    except JitvocError as e:
        log.error(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except BrokenPipeError:
        _silence_stdout()
        return 128 + signal.SIGPIPE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _silence_stdout() -> None:
    """The reader of stdout went away: send what Python still flushes at exit to /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
