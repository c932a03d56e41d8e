"""jitvoc: JIT-compiled, pruned, quantized WaveRNN vocoders for CPUs."""
from .cpu import Generation, describe_host
from .errors import InputError, ISAError, JitvocError, ModelFileError, UnsupportedCPU
from .matvec import MatVec, build_matvec
from .mel import mel_spectrogram
from .model import Model, load_model, random_model
from .quant import FixedPoint, RowScaled
from .recurrence import linear_recurrence, linear_recurrence_backward
from .spec import KernelSpec
from .vocoder import Vocoder, load

__version__ = "0.1.0"
__all__ = ["Generation", "describe_host", "InputError", "ISAError", "JitvocError",
           "ModelFileError", "UnsupportedCPU", "MatVec", "build_matvec", "mel_spectrogram",
           "Model", "load_model", "random_model", "FixedPoint", "RowScaled",
           "linear_recurrence", "linear_recurrence_backward", "KernelSpec", "Vocoder", "load"]
