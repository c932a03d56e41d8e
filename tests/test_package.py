"""Packaging: the kernel templates, the installed models and their data notices ship in the wheel, and the ISA tables agree with each other."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jitvoc import cpu, pretrained, templates
from jitvoc.emit import isa

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
    assert "jitvoc/plan/vocoder.py" in names and "jitvoc/emit/loop.py" in names
    assert f"jitvoc/pretrained/{pretrained.DEFAULT}.npz" in names
    for notice in (ROOT / "models").glob("LICENSE.*"):
        assert f"jitvoc-0.1.0.dist-info/licenses/models/{notice.name}" in names


def test_every_template_intrinsic_has_a_feature_entry():
    for t in templates.load_all().values():
        for section in ("dot4", "dot2", "gather"):
            for value in t.get(section, {}).values():
                names = value.values() if isinstance(value, dict) else [value]
                for name in names:
                    if isinstance(name, str) and name.startswith("llvm."):
                        assert name in isa.INTRINSIC_FEATURES, (t["name"], name)


def test_templates_only_need_known_features():
    for t in templates.load_all().values():
        assert set(t["requires"]) <= set(cpu.SIMD_FEATURES), t["name"]


def test_every_generation_has_a_backend():
    for name in cpu.GENERATIONS:
        assert isa.best(cpu.generation(name))
