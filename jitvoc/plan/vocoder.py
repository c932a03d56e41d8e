"""Plan the compiled generation loop of a WaveRNN model: one matrix-vector plan per sparse matrix
(gru.R, out.O1..O4) and the fixed-point format of each matrix's input.

O1 and O3 read the codes of h that the GRU update writes for R (their halves of it) whenever
their layouts are of the same kind, so h is quantized once per sample.

Input formats: the GRU state is a convex mix of h and tanh, so |h| < 1 and R, O1 and O3 read it
as s8q7 (int8) or s16q15 (int16). O2 and O4 read relu outputs, unsigned, whose range comes from
the model's calibration (``meta.quantization.activation_ranges[matrix].max``, max |x| of the
matrix's input measured on training data, or by jitvoc.calibrate on a synthetic signal), which
the run stage reads (jitvoc.engine_jit.activation_ranges) and passes in.

float32 plans are the same on every CPU generation (idx variant, same unroll and accumulators),
so the float engine gives the same bits everywhere.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .. import isa
from ..errors import InputError
from ..quant import ACTIVATION_BITS, FixedPoint
from ..representation import Representation
from ..wavernn import BY_NAME, NAMES
from . import matvec as mv_plan

VECTOR = 16  # logical vector width of the element-wise code
FLOAT_ACCUMULATORS = 4  # float32 partial sums per row block, the same on every generation
# (variant, unroll) of the sparse integer kernels of the loop of B > 1 streams, where the
# planner's untuned choice for B vectors is grouped (row blocks by panel count): row blocks in
# order, as in the single-stream loop (plan.matvec.INLINE_KERNEL), with the B-vector kernels'
# one accumulator set. Measured in the loop (bench/README.md, "Issue 15: B = 8, sixth round"):
# int8 B = 2, 4, 8, 16 x1.03, x1.00, x1.03, x1.03 per stream-sample; int16 x1.00-1.01. Measured
# on Zen 4; a generation where another unroll measured faster says so in isa.KERNEL_CHOICES.
STREAMS_KERNEL = {"variant": "idx", "unroll": 4}
# Kernel dtype per matrix for each engine dtype.
PRECISION = {d: {m: d for m in NAMES} for d in ("int8", "int16", "float32")}


@dataclass(frozen=True, eq=False, kw_only=True)
class VocoderPlan:
    dtype: str
    gen: object
    hidden: int
    hop: int
    upsample: str
    plans: dict      # matrix name -> matvec Plan
    formats: dict    # matrix name -> FixedPoint of its input (integer dtypes)
    representation: Representation  # the output decode, compiled in
    vectors: int = 1  # B: streams advanced per step (the batched loop, B-vector kernels)

    @property
    def name(self) -> str:
        """The loop's symbol and cache key: the dtype plus a hash of everything compiled in."""
        rep = self.representation
        h = hashlib.sha256(f"{self.hidden}/{self.hop}/{self.upsample}/{rep.code}/"
                           f"{rep.preemphasis!r}/{rep.dc_block!r}".encode())
        batch = f"_b{self.vectors}" if self.vectors > 1 else ""
        for m in NAMES:
            h.update(self.plans[m].spec.name.encode())
            h.update(str(self.formats.get(m)).encode())
        return (f"wavernn_h{self.hidden}_{self.dtype}_{self.plans['gru.R'].spec.isa}{batch}_"
                f"{h.hexdigest()[:10]}")


def input_formats(precision: dict, ranges: dict | None) -> dict:
    """The fixed-point format of each integer matrix's input; `ranges`: max |input| of O2 and
    O4 (jitvoc.engine_jit.activation_ranges), needed when either is an integer matrix."""
    fmts = {}
    for m, dtype in precision.items():
        if dtype == "float32":
            continue
        bits = ACTIVATION_BITS[dtype]
        if BY_NAME[m].reads_state:
            fmts[m] = FixedPoint(bits, bits - 1, signed=True)
        elif ranges is None:
            raise ValueError(f"planning {m} in {dtype} needs the model's activation ranges")
        else:
            fmts[m] = FixedPoint.covering(ranges[m], bits, signed=(bits == 16))
    return fmts


def plan_vocoder(model, dtype: str, gen, ranges: dict | None = None,
                 precision: dict | None = None, vectors: int = 1) -> VocoderPlan:
    """Plan the loop for `dtype`; `ranges`: max |input| of O2 and O4 (integer dtypes need them,
    see input_formats); `precision` may override the kernel dtype per matrix (by default
    PRECISION[dtype]); `vectors`: B > 1 plans the loop of B streams (B-vector kernels, which
    read the codes of h interleaved whatever their layout: emit.cell's streams mode)."""
    if dtype not in PRECISION:
        raise InputError(f"dtype must be int8, int16 or float32, got {dtype!r}")
    if model.hidden % (2 * VECTOR):
        raise InputError(f"the JIT engine needs a hidden size that is a multiple of "
                         f"{2 * VECTOR}, got {model.hidden}")
    precision = {**PRECISION[dtype], **(precision or {})}
    if dtype == "float32" and set(precision.values()) != {"float32"}:
        raise InputError("the float32 engine computes every matrix in float32")
    formats = input_formats(precision, ranges)
    plans = {}
    for name, (w, mask) in model.matrices().items():
        mask, kind = mask != 0, precision[name]
        codes, scale = mv_plan.quantize_weights(w, kind, mask)
        signed = formats[name].signed if name in formats else True
        if kind == "float32":  # one layout for every generation: identical float results
            block = mv_plan.default_block(mask, kind, "sse2", gen)
            plans[name] = mv_plan.build_plan(codes, scale, mask, kind, gen, block=block,
                                             variant="dense" if block is None else "idx",
                                             unroll=4, accumulators=FLOAT_ACCUMULATORS,
                                             vectors=vectors)
            continue
        plans[name] = mv_plan.build_plan(codes, scale, mask, kind, gen, x_signed=signed,
                                         inline=vectors == 1, vectors=vectors,
                                         **_streams_kernel(mask, kind, gen, vectors))
        if vectors > 1:
            continue
        r = plans["gru.R"]
        if BY_NAME[name].reads_half and _input_kind(plans[name]) == _input_kind(r):
            # read the codes of h that the GRU update writes for R (one quantization of h);
            # shifted tables are then laid out with R's stride
            if not (r.packed.contiguous or r.spec.x_permute):
                plans[name] = mv_plan.build_plan(codes, scale, mask, kind, gen,
                                                 x_signed=signed, x_stride=r.packed.x_len,
                                                 inline=True)
    plan = VocoderPlan(dtype=dtype, gen=gen, hidden=model.hidden, hop=model.hop_length,
                       upsample=model.upsample, plans=plans, formats=formats,
                       representation=model.representation, vectors=vectors)
    return plan


def _streams_kernel(mask, kind: str, gen, vectors: int) -> dict:
    """build_plan's arguments for a B-vector kernel of the loop of B streams: STREAMS_KERNEL (its
    unroll as isa.KERNEL_CHOICES gives it for this generation, dtype and B) on the planner's
    block, unless it plans the matrix dense (B = 1: none)."""
    if vectors == 1:
        return {}
    block = mv_plan.default_block(mask, kind, isa.best(gen), gen, vectors)
    if block is None:
        return {"block": None, "variant": "dense"}
    unroll = isa.kernel_choice(gen, ("streams_unroll", kind, vectors), STREAMS_KERNEL["unroll"])
    return {"block": block, **STREAMS_KERNEL, "unroll": unroll}


def vocoder_cell(plan: VocoderPlan, teacher: bool = False) -> tuple:
    """(CellPlan, kernels) of the single-stream loop: the WaveRNN step in the cell language
    (cells.wavernn: the plan's hidden size and representation; inputs k0, k1, alpha with a
    linear upsampling, else k) scheduled for the plan's dtype with the plan's input formats,
    and `kernels`, label -> the plan's matvec Plan of each in-loop product (one matrix each),
    with which the compiled cell gives the samples of the hand-written loop bit for bit
    (docs/cells.md); with `teacher`, its teacher-forced form (cells.wavernn_teacher). An
    InputError where the plan's matrices are not all of its dtype (a cell has one:
    `precision`). The cell language and its scheduler are imported here: an engine whose
    loop is cached never schedules it (engine_jit.CompiledCell)."""
    from .. import cells
    from . import cell as plan_cell
    upsample = "linear" if plan.upsample == "linear" else None
    cell = (cells.wavernn_teacher(plan.hidden, upsample=upsample) if teacher else
            cells.wavernn(plan.hidden, plan.representation, upsample=upsample))
    ranges = {m: fmt.qmax * fmt.scale for m, fmt in plan.formats.items()}   # max |x| covered
    schedule = plan_cell.plan(cell, plan.dtype, ranges or None)
    kernels = {p.label: plan.plans[p.weights[0]] for p in schedule.products}
    for p in schedule.products:
        m = p.weights[0]
        if (schedule.formats[p.label], kernels[p.label].spec.dtype) != (
                plan.formats.get(m), plan.dtype):
            raise InputError(f"the single-stream engine runs every matrix in its dtype "
                             f"{plan.dtype}; {m} is planned in {kernels[p.label].spec.dtype} "
                             f"(precision)")
    return schedule, kernels


def describe(plan: VocoderPlan) -> str:
    """One line: the loop's name and each matrix's kernel and input format (JITVOC_DEBUG=1)."""
    return f"vocoder plan {plan.name}: " + ", ".join(
        f"{m} {p.spec.name}" + (f" <- {plan.formats[m].name}" if m in plan.formats else "")
        for m, p in plan.plans.items())


def _input_kind(plan) -> tuple:
    """What a kernel reads as x: its dtype, and plain codes or shifted tables."""
    codes = plan.packed.contiguous or bool(plan.spec.x_permute)
    return plan.spec.dtype, codes, plan.spec.x_signed
