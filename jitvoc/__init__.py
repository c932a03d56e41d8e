"""jitvoc: JIT-compiled, pruned, quantized WaveRNN vocoders for CPUs.

Importing the package loads nothing else: its names and submodules load on first use (PEP 562),
so ``import jitvoc.mel`` or ``jitvoc.representation`` needs only NumPy, while ``jitvoc.load``
brings in the compiler (llvmlite) and the native calls (cffi).
"""
import importlib
import importlib.util

__version__ = "0.1.0"

# public name -> the submodule defining it
_EXPORTS = {
    "CompiledCell": "cellrun", "compile_cell": "cellrun",
    "calibrate": "calibration",
    "Generation": "cpu", "describe_host": "cpu",
    "InputError": "errors", "ISAError": "errors", "JitvocError": "errors",
    "ModelFileError": "errors", "UnsupportedCPU": "errors",
    "MatVec": "matvec", "build_matvec": "matvec",
    "mel_spectrogram": "mel",
    "Model": "model", "load_model": "model", "random_model": "model",
    "FixedPoint": "quant", "RowScaled": "quant",
    "linear_recurrence": "recurrence", "linear_recurrence_backward": "recurrence",
    "KernelSpec": "spec",
    "Vocoder": "vocoder", "load": "vocoder",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """A public name or a submodule, imported on first access."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    elif importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
