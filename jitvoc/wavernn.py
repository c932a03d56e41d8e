"""The WaveRNN's matrices, one table: what each sparse matrix is called in a model file, the bias
its kernel's epilogue adds, whether a relu follows, and what it reads (docs/model.md)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Matrix:
    name: str    # the weight's key in a model file (its mask: name + ".mask")
    bias: str    # the bias vector the kernel's epilogue adds
    relu: bool   # relu after the bias (the output layers' hidden halves)
    reads: str   # "h", "h.coarse", "h.fine" (the GRU state or a half of it), or the matrix
                 # whose relu output it reads

    @property
    def reads_state(self) -> bool:
        return self.reads.startswith("h")

    @property
    def reads_half(self) -> bool:
        """Reads a half of h (and can share the codes of h quantized for gru.R)."""
        return self.reads in ("h.coarse", "h.fine")

    def state_offset(self, hidden: int) -> int:
        """Where in h the matrix's input starts (matrices that read the state)."""
        return hidden // 2 if self.reads == "h.fine" else 0


MATRICES = (Matrix("gru.R", "gru.bR", False, "h"),
            Matrix("out.O1", "out.b1", True, "h.coarse"),
            Matrix("out.O2", "out.b2", False, "out.O1"),
            Matrix("out.O3", "out.b3", True, "h.fine"),
            Matrix("out.O4", "out.b4", False, "out.O3"))
NAMES = tuple(m.name for m in MATRICES)
BY_NAME = {m.name: m for m in MATRICES}
