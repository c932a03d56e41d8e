"""The `jitvoc` command. Each subcommand lives in a module of this package with a
`register(subparsers)` function that adds its parser and sets `func(args) -> int`."""
import argparse
import importlib
import sys

from ..errors import JitvocError

SUBCOMMANDS = ("info", "models", "kernels", "synth", "bench")  # modules of this package


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jitvoc", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except JitvocError as e:
        print(f"jitvoc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jitvoc: interrupted", file=sys.stderr)
        return 130
