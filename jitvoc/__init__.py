"""jitvoc: JIT-compiled, pruned, quantized WaveRNN vocoders for CPUs."""
from .mel import mel_spectrogram
from .model import Model, load_model, random_model
from .vocoder import Vocoder, load

__version__ = "0.1.0"
from .recurrence import linear_recurrence, linear_recurrence_backward
