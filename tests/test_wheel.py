"""The built package: a wheel and an sdist with every module, installed into a fresh virtual environment.

The wheel is built the way a user would (``pip wheel --no-deps --no-build-isolation``) from a copy of the
sources, installed with ``--no-deps`` into a venv that sees the system's torch (``--system-site-packages``),
and then every module is imported from the venv and ``python -m imagebart_core.convert --help`` runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: source folder in a clone -> installed package name
PACKAGES = {"imagebart_core": "imagebart_core", "training": "imagebart_training", "nodes": "imagebart_nodes"}
SOURCES = [*PACKAGES, "pyproject.toml", "README.md", "LICENSE"]


def expected_modules() -> list[str]:
    """Every module of the source tree under its installed name (a new file that is not packaged fails)."""
    names = []
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            names.append(".".join([package, *parts]))
    return names


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INDEX"] = "1"  # nothing is downloaded: --no-deps, and the build uses the system's setuptools
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd, cwd, env) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(wheel path, sdist path) built from a copy of the sources (the checkout gets no build/ or egg-info)."""
    tmp = tmp_path_factory.mktemp("package")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(p, src / name)
    env = _clean_env()
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, src], tmp, env)
    _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"], src,
         env)
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, list(dist.iterdir())
    return wheels[0], sdists[0], tmp, env


def test_wheel_and_sdist_hold_every_module_and_no_foreign_top_level_name(built):
    wheel, sdist, _, _ = built
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    top = {n.split("/", 1)[0] for n in names}
    import imagebart_core

    dist_info = f"imagebart-{imagebart_core.__version__}.dist-info"  # = pyproject.toml (test_package)
    assert top == {"imagebart_core", "imagebart_training", "imagebart_nodes", dist_info}, top
    for module in expected_modules():
        path = module.replace(".", "/")
        assert f"{path}.py" in names or f"{path}/__init__.py" in names, f"{module} is missing from the wheel"
    assert "imagebart_core/data/imagenet_classes.json" in names  # package data
    metadata = next(n for n in names if n.endswith("dist-info/METADATA"))
    with zipfile.ZipFile(wheel) as z:
        meta = z.read(metadata).decode()
    requires = [line for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    assert not any("einops" in r for r in requires)
    assert any(r.startswith("Requires-Dist: lpips") and 'extra == "train"' in r for r in requires), requires
    assert not any(r.startswith("Requires-Dist: lpips") and "extra ==" not in r for r in requires)
    with tarfile.open(sdist) as t:
        members = {m.name.split("/", 1)[1] for m in t.getmembers() if "/" in m.name}
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            assert str(path.relative_to(ROOT)) in members, f"{path.relative_to(ROOT)} is missing from the sdist"
    assert "imagebart_core/data/imagenet_classes.json" in members and "pyproject.toml" in members


def test_wheel_installs_into_a_fresh_venv_and_every_module_imports(built):
    wheel, _, tmp, env = built
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", venv], tmp, env)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel], tmp, env)
    modules = expected_modules()
    check = (
        "import importlib, importlib.util, sys\n"
        # only the comfy_api stub that the nodes import, loaded from its file (the clone is not on sys.path)
        f"spec = importlib.util.spec_from_file_location('comfy_stub', {str(ROOT / 'tools' / 'comfy_stub.py')!r})\n"
        "comfy_stub = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(comfy_stub)\n"
        "sys.modules.update(comfy_stub.build_modules())\n"
        f"venv = {str(venv)!r}\n"
        f"for name in {modules!r}:\n"
        "    module = importlib.import_module(name)\n"
        "    assert module.__file__.startswith(venv), (name, module.__file__)\n"
        "for clash in ('nodes', 'training'):\n"
        "    assert importlib.util.find_spec(clash) is None or not importlib.util.find_spec(clash).origin.startswith("
        "venv), clash\n"
        "print('imported', len(sys.modules))\n"
    )
    out = _run([python, "-c", check], tmp, env)
    assert "imported" in out.stdout
    helped = _run([python, "-m", "imagebart_core.convert", "--help"], tmp, env)
    assert "usage:" in helped.stdout and "convert" in helped.stdout
    trainer = _run([python, "-m", "imagebart_training.make_shapes", "--help"], tmp, env)
    assert "usage:" in trainer.stdout
