"""The environment the tests run in is the committed lock, package for package.

`make test` and CI install requirements/py3XX-dev.txt with hashes; this checks that what is
installed is exactly that (a hand-installed or drifted package fails here, naming it), so a green
suite always says which versions it passed with.
"""

from __future__ import annotations

import re
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / f"py{sys.version_info[0]}{sys.version_info[1]}-dev.txt"
PIN = re.compile(r"^([A-Za-z0-9._-]+)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")


def locked_versions(path: Path) -> dict[str, str]:
    """{canonical name: version} of the lock's pins whose environment markers hold here."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = PIN.match(line.strip())
        if not m:
            continue
        name, version, marker = m.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[canonicalize_name(name)] = version
    return pins


def installed_versions() -> dict[str, str]:
    """What pip installed into this environment's site-packages. Only there: once something imports
    setuptools, its vendored copies (setuptools/_vendor: packaging, wheel, ...) are on sys.path too,
    and they are not installed packages."""
    paths = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions(path=paths)}


def test_vendored_copies_are_not_counted_as_installed():
    import setuptools  # noqa: F401  (puts setuptools/_vendor on sys.path, as torch's imports do)

    installed = installed_versions()
    assert "setuptools" in installed and "autocommand" not in installed


def test_parser_reads_pins_and_markers(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "numpy==2.4.6 \\\n    --hash=sha256:ab\n"
        "onnxruntime==1.23.2 ; python_full_version < '3.0' \\\n    --hash=sha256:cd\n"
        "Foo_Bar==1.0+cpu ; sys_platform != 'nonexistent' \\\n    # via x\n"
    )
    assert locked_versions(lock) == {"numpy": "2.4.6", "foo-bar": "1.0+cpu"}


@pytest.mark.skipif(not (ROOT / ".venv").exists() or Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
                    reason="runs in the project's own .venv (make test / CI), which is installed from the lock")
def test_installed_versions_equal_the_lock():
    assert LOCK.exists(), f"no lock for Python {sys.version_info[0]}.{sys.version_info[1]}: {LOCK}"
    locked = locked_versions(LOCK)
    installed = installed_versions()
    installed.pop("perception", None)  # the project itself, installed editable
    # torch/torchvision report a local build tag (2.14.1+cu130) that the index version lacks.
    def same(a: str, b: str) -> bool:
        return a == b or a.split("+")[0] == b.split("+")[0]

    wrong = sorted(f"{n} {installed[n]} (lock {v})" for n, v in locked.items() if n in installed and not same(installed[n], v))
    missing = sorted(f"{n}=={v}" for n, v in locked.items() if n not in installed)
    extra = sorted(f"{n}=={v}" for n, v in installed.items() if n not in locked)
    assert not (wrong or missing or extra), (
        f"the venv differs from {LOCK.name}: wrong {wrong}, missing {missing}, not in the lock {extra}; "
        "rebuild it with `rm -rf .venv && make venv-dev`, or `make lock` if pyproject.toml changed"
    )
