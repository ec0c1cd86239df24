"""What installing the wheel puts into site-packages: only ``perception``, the build side inside it.

``export/`` and ``bench/`` keep their top-level folders in the checkout but are installed as
``perception.export`` and ``perception.bench`` (pyproject's package-dir), so the wheel never adds
generic top-level names that would collide with other projects' modules. The package list in
pyproject.toml is explicit; this test fails when a package folder is added without it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def package_folders() -> dict[str, Path]:
    """{package name: folder} for every folder of the tree holding an __init__.py."""
    setuptools = pyproject()["tool"]["setuptools"]
    roots = {"perception": ROOT / "perception", **{k: ROOT / v for k, v in setuptools["package-dir"].items()}}
    found = {}
    for name, folder in roots.items():
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found[".".join((name, *rel))] = init.parent
    return found


def test_the_package_list_names_every_package_folder():
    listed = set(pyproject()["tool"]["setuptools"]["packages"])
    assert listed == set(package_folders()), "pyproject.toml [tool.setuptools] packages is out of date"


def test_the_wheel_adds_only_perception_to_site_packages(tmp_path):
    # Built from a copy: setuptools writes build/ and *.egg-info beside the sources it builds.
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for folder in ("perception", "export", "bench"):
        shutil.copytree(ROOT / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).is_file():
            shutil.copy(ROOT / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    (wheel,) = (tmp_path / "dist").glob("perception-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"perception"}
    for module in ("perception/export/onnx.py", "perception/export/quantize.py", "perception/bench/engine.py",
                   "perception/bench/__main__.py", "perception/assets/default.onnx"):
        assert module in names, module
    # Apache-2.0 asks for its text with every copy (it was in no wheel or sdist: H24)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names), names
