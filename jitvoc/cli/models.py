"""`jitvoc models`: the models installed with jitvoc, loadable by name."""
import os

from .. import pretrained


def register(sub) -> None:
    summary = "list the installed models (usable by name wherever a model file is expected)"
    p = sub.add_parser("models", help=summary, description=(
        "List the models installed with jitvoc, one per line: its name, its size and its file. "
        "A name can be given wherever a model file is expected (synth, resynth, kernels, and "
        "jitvoc.load in Python); the default model is marked."))
    p.set_defaults(func=_models)


def _models(args) -> int:
    for name in pretrained.names():
        path = pretrained.path(name)
        mark = " (default)" if name == pretrained.DEFAULT else ""
        print(f"{name}{mark}: {os.path.getsize(path) / 2**20:.2f} MiB, {path}")
    return 0
