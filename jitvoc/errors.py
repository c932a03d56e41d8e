"""The exceptions jitvoc raises. Every error a user can cause is a JitvocError."""


class JitvocError(Exception):
    """Base class: bad input or an impossible request, with a message naming the problem."""


class UnsupportedCPU(JitvocError):
    """A CPU generation that is unknown, or that this host cannot run."""


class ModelFileError(JitvocError):
    """A model file that is missing, corrupt, truncated, inconsistent or from a future version."""


class InputError(JitvocError, ValueError):
    """An array of the wrong shape, dtype or size, or one holding NaN/inf."""


class ISAError(JitvocError):
    """An attempt to emit an instruction that the target CPU generation lacks."""


class ContractError(JitvocError):
    """Generated code built or called against its declaration in jitvoc.contracts (a bug in
    jitvoc, caught when the IR is built)."""


class CellError(JitvocError, ValueError):
    """A cell graph (jitvoc.cells) that is ill-formed: a shape or dtype mismatch, an unknown or
    duplicate name, a cycle not through declared state, or weights and inputs that do not match
    the cell's declarations."""
