"""build_matvec at the edges (issue 11, item 2): every input that used to crash the process or
return a silently wrong result is refused with a JitvocError that names the problem and limit."""
import numpy as np
import pytest

from jitvoc import FixedPoint, Generation, InputError, UnsupportedCPU, build_matvec, cpu
from jitvoc.matvec import STACK_LIMIT
from jitvoc.plan.matvec import BAKE_LIMIT, baked_instructions, build_plan, quantize_weights
from jitvoc.quant import INT32_MAX


def test_tall_matrix_past_the_stack_limit_is_refused():
    """Used to need the padded output on the stack: SIGSEGV past about 2M rows."""
    with pytest.raises(InputError, match=f"limit of {STACK_LIMIT >> 20} MiB"):
        build_matvec(np.ones((3_000_001, 1), np.float32), "float32")


def test_wide_int8_row_past_the_stack_limit_is_refused():
    """Small weights pass the accumulator bound; the 9M activation codes would not fit."""
    w = np.zeros((1, 9_000_000), np.float32)
    w[0, ::1000] = 1.0
    with pytest.raises(InputError, match="stack"):
        build_matvec(w, "int8")


def test_large_float_row_works():
    w = np.random.default_rng(0).standard_normal((1, 2_500_000)).astype(np.float32)
    x = np.ones(w.shape[1], np.float32)
    y = build_matvec(w, "float32")(x)
    bound = (w.shape[1] + 2) * np.finfo(np.float32).eps * float(np.abs(w).sum())
    assert abs(float(y[0]) - float(w.astype(np.float64).sum())) <= bound


def test_int8_row_whose_accumulator_would_wrap_is_refused():
    """Was −256,397 instead of +267,891: 270,000 non-zeros wrapped the int32 accumulator."""
    with pytest.raises(InputError, match=f"limit is {INT32_MAX // 255}"):
        build_matvec(np.ones((1, 270_000), np.float32), "int8")


def test_int8_row_just_inside_the_accumulator_bound_is_exact():
    n = INT32_MAX // 255 // 64            # all weights quantize to 64
    y = build_matvec(np.ones((1, n), np.float32), "int8")(np.ones(n, np.float32))
    assert y[0] == pytest.approx(n, rel=1e-2)


def test_automatic_format_refuses_instead_of_clipping():
    """np.eye(16) times 1e13 gave 5.45e11."""
    mv = build_matvec(np.eye(16, dtype=np.float32), "int8")
    with pytest.raises(InputError, match="exceed the widest 8-bit format"):
        mv(np.full(16, 1e13, np.float32))
    y = mv(np.full(16, 1e11, np.float32))
    np.testing.assert_allclose(y, 1e11, rtol=1e-2)


@pytest.mark.parametrize("dtype,fmt", [("int8", FixedPoint(16, 8)), ("int16", FixedPoint(8, 4)),
                                       ("int16", FixedPoint(16, 4, signed=False)),
                                       ("float32", FixedPoint(8, 4))])
def test_x_format_of_the_wrong_kind_is_refused(dtype, fmt):
    with pytest.raises(InputError, match="x_format|activations"):
        build_matvec(np.eye(16, dtype=np.float32), dtype, x_format=fmt)


@pytest.mark.parametrize("kwargs", [{"dtype": 8}, {"block": (16,)}, {"block": (0, 1)},
                                    {"block": "16x1"}, {"autotune": "yes"}, {"variant": "fast"},
                                    {"isa": 3}, {"x_format": 8}, {"mask": "all"},
                                    {"mask": np.ones((3, 3))}])
def test_arguments_are_type_checked(kwargs):
    with pytest.raises(InputError):
        build_matvec(np.eye(16, dtype=np.float32), **kwargs)


def test_explicit_baked_variant_obeys_the_compile_budget():
    """Used to compile for over a minute."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((2048, 2048)) * (rng.random((2048, 2048)) < 0.2)).astype(np.float32)
    with pytest.raises(InputError, match=f"compile budget of {BAKE_LIMIT}"):
        build_matvec(w, "int8", block=(16, 1), variant="baked")


def test_bake_limit_counts_instructions_per_vector_width():
    """Issue 12: counted as 512 vector products, a dense 32x64 matrix in 1x1 blocks was baked
    into 2.2 MB of IR (9 s of compile). In plain IR each of a panel's 4 products is an
    instruction, plus 4 table loads; a 16x1 panel is one VNNI instruction (plus 4 table loads
    without VBMI, none with it)."""
    mask = np.ones((32, 64), bool)
    vnni, vbmi = cpu.generation("cascadelake"), cpu.generation("icelake-server")
    assert baked_instructions(mask, (1, 1), "int8", "avx512vnni", vnni) == 512 * (4 + 4)
    assert baked_instructions(mask, (16, 1), "int8", "avx512vnni", vnni) == 32 * (1 + 4)
    assert baked_instructions(mask, (16, 1), "int8", "avx512vnni", vbmi) == 32 * 1
    assert baked_instructions(mask, (16, 1), "int8", "sse2", cpu.generation("x86-64")) == 32 * 8
    codes, scale = quantize_weights(np.ones((32, 64), np.float32), "int8")
    assert build_plan(codes, scale, mask, "int8", vnni, block=(1, 1)).spec.variant == "grouped"
    assert build_plan(codes, scale, mask, "int8", vnni, block=(16, 1)).spec.variant == "baked"


@pytest.mark.parametrize("gen", [
    Generation("fast", "sapphirerapids", "", frozenset({"sse2"})),    # passed the host check
    Generation("odd", "no-such-cpu", "+sse2", frozenset({"sse2"})),    # made LLVM abort
    Generation("odd", "x86-64", "+avx512f,-sse2", frozenset({"sse2"})),
])
def test_custom_generation_must_match_a_known_one(gen):
    with pytest.raises(UnsupportedCPU, match="matches no known generation"):
        build_matvec(np.eye(16, dtype=np.float32), "int8", cpu=gen)


def test_custom_generation_equal_to_a_known_one_is_accepted():
    known = cpu.generation("x86-64")
    renamed = Generation("mine", known.llvm_cpu, known.llvm_features, known.features)
    assert build_matvec(np.eye(16, dtype=np.float32), "int8", cpu=renamed).gen == renamed


def test_cpu_of_the_wrong_type_is_refused():
    with pytest.raises(UnsupportedCPU, match="cpu must be"):
        build_matvec(np.eye(16, dtype=np.float32), "int8", cpu=3)


def test_float32_overflow_is_refused_not_nan():
    """Found by fuzzing: products past float32's range summed to NaN."""
    w = np.array([[3e30, -3e30]], np.float32)
    with pytest.raises(InputError, match="overflows float32"):
        build_matvec(w, "float32")(np.array([1e19, 2e19], np.float32))


def test_calibration_pass_is_bounded(monkeypatch):
    """A model without calibration is measured on a synthetic signal: with a hop of 4000 that
    was 16 frames = 64,000 teacher-forced samples in Python; now at most 2 frames."""
    from jitvoc import calibration
    from jitvoc.engine_jit import activation_ranges
    from jitvoc.model import Model, random_model
    small = random_model(hidden=32, density=0.25, sample_rate=16000, n_mels=8, cond_channels=8)
    meta = small.meta
    meta["mel"].update(hop_length=4000, n_fft=8192, win_length=8000)
    model = Model(small.weights, small.masks, meta)
    lengths = []
    from jitvoc.reference import vocoder as oracle   # calibration imports it when it measures
    real = oracle.teacher_forced_states
    monkeypatch.setattr(oracle, "teacher_forced_states",
                        lambda m, mel, audio: lengths.append(len(audio)) or real(m, mel, audio))
    ranges = activation_ranges(calibration.calibrate(model))
    assert lengths == [8000] and all(np.isfinite(v) and v >= 0 for v in ranges.values())
