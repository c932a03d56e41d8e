"""Packaging: the kernel templates, the installed models and their data notices ship in the wheel, and the ISA tables agree with each other."""
import copy
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jitvoc import cpu, isa, pretrained
from jitvoc.errors import ISAError

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_ships_kernel_templates_and_models(tmp_path):
    try:
        import setuptools  # noqa: F401  (building without isolation needs it here)
    except ImportError:
        pytest.skip("setuptools is not installed")
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps",
                    "--no-build-isolation", "-q", "-w", str(tmp_path)], check=True)
    wheel = next(tmp_path.glob("jitvoc-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for t in (ROOT / "kernels_templates").glob("*.toml"):
        assert f"jitvoc/kernels_templates/{t.name}" in names
    assert "jitvoc/plan/vocoder.py" in names and "jitvoc/emit/cell.py" in names
    assert f"jitvoc/pretrained/{pretrained.DEFAULT}.npz" in names
    for notice in (ROOT / "models").glob("LICENSE.*"):
        assert f"jitvoc-0.1.0.dist-info/licenses/models/{notice.name}" in names


def test_templates_follow_the_schema():
    assert set(isa.templates()) == {"sse2", "ssse3", "avx2", "avxvnni", "avx512bw", "avx512vnni"}


@pytest.mark.parametrize("broken, message", [
    (lambda t: t.pop("vector_bits"), "needs 'vector_bits'"),
    (lambda t: t["dot4"].pop("maddubs"), r"\[dot4\] form 'maddubs' takes the tables"),
    (lambda t: t["dot2"]["madd_wd"].update({"8": "llvm.x86.nothing"}), "llvm.x86.nothing"),
    (lambda t: t.update(requires=["sse2", "avx9"]), "unknown features"),
    (lambda t: t.update(gather="permute3"), "gather 'permute3'"),
])
def test_a_broken_template_fails_at_load(broken, message):
    t = copy.deepcopy(isa.templates()["avx512bw"])
    broken(t)
    with pytest.raises(ISAError, match=message):
        isa.check_template(t, "avx512bw.toml")


def test_every_generation_has_a_backend():
    for name in isa.GENERATIONS:
        assert isa.best(cpu.generation(name))
