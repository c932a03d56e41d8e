"""`jitvoc info [--json]`: this host's CPU, its SIMD features as py-cpuinfo and LLVM see them, and
which CPU generations it can run."""
import json
import os

from .. import cpu as cpu_mod


def register(sub) -> None:
    summary = "show the host CPU, its SIMD features and the generations it can run"
    p = sub.add_parser("info", help=summary, description=(
        "Show this host's CPU, its SIMD features as py-cpuinfo and LLVM see them, which CPU "
        "generations it can run and which one a plain run compiles for."))
    p.add_argument("--json", action="store_true", help="emit the description as JSON")
    p.set_defaults(func=_info)


def describe() -> dict:
    """cpu.describe_host() plus the generation a plain run would use."""
    d = cpu_mod.describe_host()
    d["default_generation"] = os.environ.get("JITVOC_CPU") or "native"
    return d


def _info(args) -> int:
    d = describe()
    if args.json:
        print(json.dumps(d, indent=1))
        return 0
    print(f"CPU:               {d['brand']}")
    print(f"LLVM host CPU:     {d['llvm_cpu']} (LLVM {d['llvm_version']}, {d['compiler']})")
    print(f"SIMD (LLVM):       {' '.join(d['llvm_simd_features'])}")
    print(f"SIMD (py-cpuinfo): {' '.join(d['cpuinfo_simd_flags'])}")
    print(f"can run:           native, {', '.join(d['runnable_generations'])}")
    if d["not_runnable"]:
        print("cannot run (compile/dump only):")
        for name, missing in d["not_runnable"].items():
            print(f"  {name:<16} lacks {', '.join(missing)}")
    else:
        print("cannot run:        none (every known generation runs here)")
    print(f"default --cpu:     {d['default_generation']}"
          + ("  ($JITVOC_CPU)" if os.environ.get("JITVOC_CPU") else ""))
    return 0
