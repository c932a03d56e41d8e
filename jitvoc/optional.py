"""Dependencies that only some paths need, imported when those paths run."""
import importlib

from .errors import JitvocError


def require(module: str, purpose: str, package: str = None):
    """`module`, imported; else a JitvocError saying that `purpose` needs it and how to install
    it (`package`: its PyPI name, when not the module's)."""
    try:
        return importlib.import_module(module)
    except (ImportError, OSError):  # OSError: a wheel whose shared library is missing
        raise JitvocError(f"{purpose} needs {package or module}: "
                          f"pip install {package or module}") from None
