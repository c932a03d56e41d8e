"""Throughput of the AVX2 instructions jitvoc's int8 products and byte gathers use, on this host:
the arithmetic behind "the products against the dense roofline" (bench/README.md).

    python bench/avx2_ports.py [--rounds 7] [NAME ...]

Each case is a loop of independent instructions (inline assembly compiled by llvmlite, the
host's LLVM CPU and features) run 2,000,000 times; CPU time of this thread, median of rounds.
The clock is taken from a chain of dependent scalar adds (one cycle each): each case's cycles
per loop trip and instructions per cycle follow from it. A tool, not a kernel: it needs AVX2.
"""
import argparse
import ctypes
import statistics
import time

import llvmlite.binding as llvm
from llvmlite import ir


def _ymm(fmt: str, n: int, start: int = 0) -> str:
    return "\n".join(fmt.format(i=start + i, j=start + i + 6) for i in range(n))


# name -> (loop body, instructions of interest per trip)
CASES = {
    "clock (dependent add)": ("\n".join(["add $$1, %rax"] * 20), 20),
    "vpmaddubsw": (_ymm("vpmaddubsw %ymm14, %ymm15, %ymm{i}", 12), 12),
    "vpmaddwd": (_ymm("vpmaddwd %ymm14, %ymm15, %ymm{i}", 12), 12),
    "vpaddd": (_ymm("vpaddd %ymm14, %ymm15, %ymm{i}", 12), 12),
    "vpshufb": (_ymm("vpshufb %ymm14, %ymm15, %ymm{i}", 12), 12),
    "vpblendvb": (_ymm("vpblendvb %ymm13, %ymm14, %ymm15, %ymm{i}", 12), 12),
    "vpbroadcastd m32": ("\n".join(f"vpbroadcastd {4 * i}(%rsi), %ymm{i}" for i in range(12)), 12),
    "vpmaddubsw + vpmaddwd": (_ymm("vpmaddubsw %ymm14, %ymm15, %ymm{i}\n"
                                   "vpmaddwd %ymm14, %ymm15, %ymm{j}", 6), 12),
    "vpmaddubsw + vpshufb": (_ymm("vpmaddubsw %ymm14, %ymm15, %ymm{i}\n"
                                  "vpshufb %ymm14, %ymm15, %ymm{j}", 6), 12),
    "vpmaddubsw + vpblendvb": (_ymm("vpmaddubsw %ymm14, %ymm15, %ymm{i}\n"
                                    "vpblendvb %ymm13, %ymm14, %ymm15, %ymm{j}", 6), 12),
    "vpshufb + vpblendvb": (_ymm("vpshufb %ymm14, %ymm15, %ymm{i}\n"
                                 "vpblendvb %ymm13, %ymm14, %ymm15, %ymm{j}", 6), 12),
    # one int8 dot step of 32 MACs (as emit.isa's maddubs form): 6 accumulators
    "dot step (32 MACs)": (_ymm("vpmaddubsw %ymm14, %ymm15, %ymm{j}\n"
                                "vpmaddwd %ymm13, %ymm{j}, %ymm{j}\n"
                                "vpaddd %ymm{j}, %ymm{i}, %ymm{i}", 6), 6),
    "dot step, weights from memory": (
        "\n".join(f"vpmaddubsw {32 * i}(%rsi), %ymm15, %ymm{6 + i}\n"
                  f"vpmaddwd %ymm13, %ymm{6 + i}, %ymm{6 + i}\n"
                  f"vpaddd %ymm{6 + i}, %ymm{i}, %ymm{i}" for i in range(6)), 6),
    "dot step + vpbroadcastd m32": (
        "\n".join(f"vpbroadcastd {4 * i}(%rsi), %ymm12\n"
                  f"vpmaddubsw %ymm12, %ymm15, %ymm{6 + i}\n"
                  f"vpmaddwd %ymm13, %ymm{6 + i}, %ymm{6 + i}\n"
                  f"vpaddd %ymm{6 + i}, %ymm{i}, %ymm{i}" for i in range(6)), 6),
    "dot step + vpshufb": (_ymm("vpshufb %ymm14, %ymm15, %ymm12\n"
                                "vpmaddubsw %ymm14, %ymm15, %ymm{j}\n"
                                "vpmaddwd %ymm13, %ymm{j}, %ymm{j}\n"
                                "vpaddd %ymm{j}, %ymm{i}, %ymm{i}", 6), 6),
}
TRIPS = 2_000_000


def compiled(body: str, tm):
    """(engine, function(trips, buffer)) running `body` `trips` times."""
    m = ir.Module(name="ports")
    m.triple = llvm.get_default_triple()
    sig = ir.FunctionType(ir.VoidType(), [ir.IntType(64), ir.PointerType(ir.IntType(8))])
    fn = ir.Function(m, sig, name="f")
    b = ir.IRBuilder(fn.append_basic_block())
    clobbers = ",".join(["~{dirflag},~{fpsr},~{flags},~{memory}"]
                        + [f"~{{ymm{i}}}" for i in range(16)])
    b.call(ir.InlineAsm(sig, f"1:\n{body}\ndec $0\njnz 1b", "r,r," + clobbers,
                        side_effect=True), list(fn.args))
    b.ret_void()
    mod = llvm.parse_assembly(str(m))
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.finalize_object()
    return engine, ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_void_p)(
        engine.get_function_address("f"))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="cases (default: all)")
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()
    tm = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten())
    clock = "clock (dependent add)"
    names = [clock] + [n for n in (args.names or CASES) if n != clock]
    buf = ctypes.create_string_buffer(4096 + 64)
    at = (ctypes.addressof(buf) + 63) // 64 * 64
    fns = {name: compiled(CASES[name][0], tm) for name in names}
    ns = {name: [] for name in names}
    for _ in range(args.rounds):
        for name, (_, f) in fns.items():
            t0 = time.thread_time()
            f(TRIPS, at)
            ns[name].append((time.thread_time() - t0) / TRIPS * 1e9)
    ghz = CASES[names[0]][1] / statistics.median(ns[names[0]])
    print(f"clock {ghz:.2f} GHz (a dependent add a cycle)")
    for name in names[1:]:
        cycles = statistics.median(ns[name]) * ghz
        print(f"{name:>30}: {cycles:6.2f} cycles a trip, {CASES[name][1] / cycles:5.2f} a cycle")


if __name__ == "__main__":
    main()
