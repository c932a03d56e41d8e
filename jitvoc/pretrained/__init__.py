"""The models installed with jitvoc, loadable by name: `jitvoc.load("multivoice_wavernn_16k")`.

An installed model is a file NAME.npz in this folder (package data). A name is a string without
a path separator that does not end in ".npz"; anything else (and every os.PathLike) is a path, so
a file named like a model in the current directory is reached as "./NAME".
"""
import os

from ..errors import ModelFileError

DIRECTORY = os.path.dirname(os.path.abspath(__file__))
SUFFIX = ".npz"
DEFAULT = "multivoice_wavernn_16k"  # what `jitvoc resynth` and `models.evaluate` use without a model


def names() -> list:
    """The installed model names, sorted."""
    return sorted(f[:-len(SUFFIX)] for f in os.listdir(DIRECTORY) if f.endswith(SUFFIX))


def is_name(name_or_path) -> bool:
    if not isinstance(name_or_path, str):
        return False
    separators = {os.sep, os.altsep} - {None}
    return not any(s in name_or_path for s in separators) and not name_or_path.endswith(SUFFIX)


def path(name) -> str:
    """The file of an installed model; an unknown name raises ModelFileError listing the names."""
    installed = names()
    if name not in installed:
        raise ModelFileError(
            f"unknown model name {name!r}; installed models: {', '.join(installed) or 'none'} "
            f"(a model file is given by a path ending in {SUFFIX} or containing {os.sep!r})")
    return os.path.join(DIRECTORY, name + SUFFIX)


def resolve(name_or_path):
    """The path of an installed model for a name, else `name_or_path` unchanged."""
    return path(name_or_path) if is_name(name_or_path) else name_or_path
