"""The `jitvoc` command. Each subcommand lives in a module of this package with a
`register(subparsers)` function that adds its parser and sets `func(args) -> int`.

Conventions: results on stdout, messages on stderr through Python logging (-v for more, down to
the JITVOC_DEBUG levels, -q for warnings and errors only); '-' names stdin or stdout; SIGTERM,
SIGINT and a closed pipe end the command without leaving partial or temporary files.
"""
import argparse
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
    """The parser of `argv`'s command: only the module that registers it is imported (every
    module when argv is None or names no command: --help, a typo). Imports are most of a
    command's fixed cost: `bench` alone brought in the cell compiler, 0.1-0.2 s before
    `resynth` could start."""
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
    """The modules to register for `argv`: its command's, else all of them."""
    command = next((a for a in argv or () if not a.startswith("-")), None)
    if command in COMMANDS:
        return [COMMANDS[command]]
    return list(dict.fromkeys(COMMANDS.values()))


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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        if args.command == "bench":
            bench = importlib.import_module(f"{__name__}.bench")   # registered: imported
            if args.bench_command in bench.OWN_OPTIONS:
                bench.refuse_options_before(args.bench_command, argv)
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
