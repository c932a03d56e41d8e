"""linear_recurrence and its backward pass against the NumPy serial loops, on every runnable CPU."""
import dataclasses

import numpy as np
import pytest

from jitvoc import cpu, isa
from jitvoc.errors import InputError, UnsupportedCPU
from jitvoc.plan import scan as plan_scan
from jitvoc.recurrence import kernel, linear_recurrence, linear_recurrence_backward
from jitvoc.reference import scan as ref

GENERATIONS = [g for g in ("x86-64", "haswell", "skylake-avx512", "native")
               if cpu.runnable(cpu.generation(g))]
EPS = np.finfo(np.float32).eps


MODES = ("serial", "stream", "parallel")


def make_plan(g, mode, T, D):
    """The serial, streaming-serial or parallel (2 threads) plan of one generation."""
    gen = cpu.generation(g)
    if mode == "parallel":
        return plan_scan.plan(T, D, gen, 2, "parallel")
    serial = plan_scan.plan(T, D, gen, 1, "serial")
    return dataclasses.replace(serial, serial=plan_scan.spec_for("serial", gen, mode == "stream"))


def _variant_id(g, mode):
    name = make_plan(g, mode, 100, 64).name
    return f"{name.split('_c')[0] if mode == 'parallel' else name}-{g}"


VARIANTS = [pytest.param(g, m, id=_variant_id(g, m)) for g in GENERATIONS for m in MODES]


def _inputs(T, D, seed=0, lo=0.5):
    rng = np.random.default_rng(seed)
    lam = rng.uniform(lo, 1.0, (T, D)).astype(np.float32)
    x = rng.standard_normal((T, D)).astype(np.float32)
    h0 = rng.standard_normal(D).astype(np.float32)
    return lam, x, h0


def _check(got, lam, x, h0):
    """Within a rounding bound that grows with T: |err| <= 4·eps·T·(the recurrence of |.|)."""
    f64 = lambda a: np.abs(a.astype(np.float64))  # noqa: E731
    want = ref.linear_recurrence(lam.astype(np.float64), x.astype(np.float64),
                                 h0.astype(np.float64))
    bound = ref.linear_recurrence(f64(lam), f64(x), f64(h0))
    tol = 4 * EPS * len(lam) * bound + 1e-30
    assert np.all(np.abs(got - want) <= tol), np.max(np.abs(got - want) / tol)


SHAPES = [(1, 1), (1, 37), (9, 1), (100, 33), (257, 64), (301, 200)]


@pytest.mark.parametrize("T,D", SHAPES, ids=[f"T{T}xD{D}" for T, D in SHAPES])
@pytest.mark.parametrize("g,mode", VARIANTS)
def test_forward_matches_serial_loop(g, mode, T, D):
    lam, x, h0 = _inputs(T, D)
    _check(linear_recurrence(lam, x, h0, cpu=g, plan=make_plan(g, mode, T, D)), lam, x, h0)


@pytest.mark.parametrize("g,mode", VARIANTS)
def test_long_sequence(g, mode):
    lam, x, h0 = _inputs(1000, 48, seed=1, lo=0.9)
    _check(linear_recurrence(lam, x, h0, cpu=g, plan=make_plan(g, mode, 1000, 48)), lam, x, h0)


@pytest.mark.parametrize("g,mode", VARIANTS)
def test_decays_zero_and_one_are_exact(g, mode):
    rng = np.random.default_rng(2)
    plan = make_plan(g, mode, 203, 21)
    lam = rng.integers(0, 2, (203, 21)).astype(np.float32)   # exactly 0 or 1
    x = rng.integers(-3, 4, (203, 21)).astype(np.float32)
    h0 = np.arange(21, dtype=np.float32)
    got = linear_recurrence(lam, x, h0, cpu=g, plan=plan)
    np.testing.assert_array_equal(got, ref.linear_recurrence(lam, x, h0))
    ones = linear_recurrence(np.ones_like(lam), np.ones_like(x), None, cpu=g, plan=plan)
    np.testing.assert_array_equal(ones, np.arange(1, 204, dtype=np.float32)[:, None] + 0 * x)


def test_chunks_not_multiple_and_planner():
    gen = cpu.resolve()
    p = plan_scan.plan(1001, 7, gen, 2, "parallel")
    assert p.bounds[0] == 0 and p.bounds[-1] == 1001 and list(p.bounds) == sorted(set(p.bounds))
    assert p.name.startswith("scan_f32_parallel_") and p.name.endswith("_t2")
    assert not plan_scan.plan(1000, 32, gen, 2).parallel          # too small to pay
    assert not plan_scan.plan(1 << 20, 256, gen, 1).parallel      # one thread
    lam, x, h0 = _inputs(1001, 7)
    _check(linear_recurrence(lam, x, h0, plan=p), lam, x, h0)
    _check(linear_recurrence(lam, x, h0, plan=p.with_threads(1)), lam, x, h0)


def test_vector_width_table():
    widths = {g: isa.scan_vector(cpu.generation(g))[0]
              for g in ("x86-64", "sandybridge", "haswell", "skylake-avx512")}
    assert widths == {"x86-64": 4, "sandybridge": 8, "haswell": 8, "skylake-avx512": 16}
    assert plan_scan.spec_for("serial", cpu.generation("skylake-avx512")).name == \
        "scan_f32_serial_v16_avx512"


def test_shapes_dtype_and_out():
    lam, x, h0 = _inputs(50, 12)
    got = linear_recurrence(lam.reshape(50, 3, 4), x.reshape(50, 3, 4), h0.reshape(3, 4))
    assert got.shape == (50, 3, 4)
    _check(got.reshape(50, 12), lam, x, h0)
    one = linear_recurrence(lam[:, 0], x[:, 0], h0[0])
    _check(one[:, None], lam[:, :1], x[:, :1], h0[:1])
    out = np.empty((50, 12), np.float32)
    assert linear_recurrence(lam, x, h0, threads=1, out=out) is out
    with pytest.raises(InputError, match="float32"):
        linear_recurrence(lam.astype(np.float64), x)
    with pytest.raises(InputError, match="shape"):
        linear_recurrence(lam, x[:, :5])
    with pytest.raises(InputError, match="initial_state"):
        linear_recurrence(lam, x, h0[:3])


@pytest.mark.parametrize("name", ["decays", "impulses", "initial_state"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_raises(name, bad):
    lam, x, h0 = _inputs(40, 5)
    arrays = {"decays": lam, "impulses": x, "initial_state": h0}
    arrays[name][(3, 2) if arrays[name].ndim == 2 else 2] = bad
    with pytest.raises(InputError, match=f"{name} holds NaN or inf"):
        linear_recurrence(lam, x, h0)
    with pytest.raises(InputError, match="NaN or inf"):
        linear_recurrence_backward(lam, x, h0, x)


def test_overflow_is_not_an_input_error():
    lam = np.full((200, 3), 10.0, np.float32)
    h = linear_recurrence(lam, np.ones_like(lam))
    assert np.isinf(h[-1]).all()


@pytest.mark.parametrize("g", GENERATIONS)
@pytest.mark.parametrize("T,D", [(1, 3), (2, 1), (70, 19), (300, 64)])
def test_backward_matches_reference(g, T, D):
    lam, x, h0 = _inputs(T, D, seed=3)
    g_h = np.random.default_rng(4).standard_normal((T, D)).astype(np.float32)
    h = linear_recurrence(lam, x, h0, cpu=g)
    got = linear_recurrence_backward(lam, h, h0, g_h, cpu=g)
    want = ref.linear_recurrence_backward(lam.astype(np.float64), h.astype(np.float64),
                                          h0.astype(np.float64), g_h.astype(np.float64))
    for a, b in zip(got, want):
        assert a.shape == b.shape and a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4 * T, atol=1e-5 * T)


def test_backward_parallel_plan_and_none_state():
    lam, x, _ = _inputs(5000, 64, seed=5, lo=0.9)
    g_h = np.ones_like(x)
    h = linear_recurrence(lam, x)
    d_lam, d_x, d_h0 = linear_recurrence_backward(lam, h, None, g_h, threads=2)
    _, want_dx, _ = ref.linear_recurrence_backward(lam.astype(np.float64), h, None,
                                                    g_h.astype(np.float64))
    np.testing.assert_allclose(d_x, want_dx, rtol=1e-3)
    assert d_h0.shape == (64,)


def _loss(lam, x, h0, w):
    return float(np.sum(w * ref.linear_recurrence(lam, x, h0)))


def test_gradients_against_finite_differences():
    """The reference backward against central differences (float64), then the JIT one."""
    T, D = 12, 3
    lam, x, h0 = (a.astype(np.float64) for a in _inputs(T, D, seed=6))
    w = np.random.default_rng(7).standard_normal((T, D))
    want = ref.linear_recurrence_backward(lam, ref.linear_recurrence(lam, x, h0), h0, w)
    args = [lam, x, h0]
    for k in range(3):
        fd = np.zeros_like(args[k])
        for idx in np.ndindex(args[k].shape):
            plus = [a.copy() for a in args]
            minus = [a.copy() for a in args]
            plus[k][idx] += 1e-6
            minus[k][idx] -= 1e-6
            fd[idx] = (_loss(*plus, w) - _loss(*minus, w)) / 2e-6
        np.testing.assert_allclose(want[k], fd, rtol=1e-5, atol=1e-7)
    f32 = [a.astype(np.float32) for a in (lam, x, h0, w)]
    got = linear_recurrence_backward(f32[0], linear_recurrence(*f32[:3]), f32[2], f32[3])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_refuses_generation_the_host_cannot_run():
    fake = cpu.Generation("future", "x86-64", "", frozenset({"sse2", "no-such-feature"}))
    with pytest.raises(UnsupportedCPU):
        kernel(plan_scan.spec_for("serial", fake), fake)
