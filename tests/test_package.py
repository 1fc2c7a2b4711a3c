"""Packaging: the ComfyUI entry point imports without ComfyUI; pyproject / requirements are registry-ready."""

import importlib.util
import inspect
import re
import subprocess
import sys
import types
from pathlib import Path
from unittest import mock

try:
    import tomllib
except ImportError:  # Python 3.10: pytest depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent


def _requirement_names(lines):
    names = []
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        names.append(re.split(r"[<>=!~\[; ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return names


def test_root_init_imports_without_comfyui():
    spec = importlib.util.spec_from_file_location(
        "_imagebart_pack_under_test", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"folder_paths": None}):  # None in sys.modules -> ImportError
        spec.loader.exec_module(module)
    assert not hasattr(module, "comfy_entrypoint")
    assert "comfy" not in sys.modules
    assert "_imagebart_pack_under_test.nodes" not in sys.modules


def test_pyproject_is_registry_ready():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = data["project"]
    assert project["name"] == "imagebart"
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["license"] == {"file": "LICENSE"}
    assert (ROOT / "LICENSE").is_file()
    # no invented repository: the URL is added when the project has a public one (user-asks issue 13)
    assert "imagebart-comfy" not in (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert all(u.startswith("https://") for u in project.get("urls", {}).values())
    comfy = data["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "includes", "requires-comfyui"):
        assert key in comfy, key
    assert re.fullmatch(r"[<>=!~]*\d+\.\d+\.\d+", comfy["requires-comfyui"])
    deps = _requirement_names(project["dependencies"])
    for banned in ("torch", "torchvision", "torchaudio", "numpy", "pillow"):
        assert banned not in deps
    req = _requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert sorted(deps) == sorted(req), "pyproject dependencies and requirements.txt differ"
    packages = data["tool"]["setuptools"]["packages"]
    assert "imagebart_core" in packages and "imagebart_core.original" in packages
    assert not {"nodes", "training"} & set(packages), "top-level names ComfyUI or other packages use"
    assert data["tool"]["setuptools"]["package-dir"] == {"imagebart_core": "imagebart_core",
                                                         "imagebart_training": "training", "imagebart_nodes": "nodes"}
    train = _requirement_names(project["optional-dependencies"]["train"])
    req_train = _requirement_names((ROOT / "requirements-train.txt").read_text(encoding="utf-8").splitlines())
    assert sorted(train) == sorted(req_train) and "lpips" in train and "lpips" not in deps
    assert any("json" in p for p in data["tool"]["setuptools"]["package-data"]["imagebart_core"])


def test_requirements_never_mention_torch():
    text = (ROOT / "requirements.txt").read_text(encoding="utf-8")
    names = _requirement_names(text.splitlines())
    assert not any(n in ("torch", "torchvision", "torchaudio") for n in names)
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        assert not re.search(r"\btorch\b", code.replace("open-clip-torch", "")), line


def test_root_init_registers_model_folder_with_comfyui(tmp_path):
    fake = types.ModuleType("folder_paths")
    fake.models_dir = str(tmp_path / "models")
    fake.folder_names_and_paths = {"imagebart": (["/from/extra_model_paths"], set())}
    spec = importlib.util.spec_from_file_location(
        "_imagebart_pack_under_test2", ROOT / "__init__.py", submodule_search_locations=[str(ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"folder_paths": fake}):
        spec.loader.exec_module(module)
    paths, extensions = fake.folder_names_and_paths["imagebart"]
    expected = ["/from/extra_model_paths", str(tmp_path / "models" / "imagebart")]
    if (ROOT / "models").is_dir():  # the bundled demo models are registered as an extra path too
        expected.append(str(ROOT / "models"))
    assert paths == expected
    assert extensions == {".safetensors"}
    assert inspect.iscoroutinefunction(module.comfy_entrypoint)


def test_core_library_imports_light():
    code = (
        "import sys, imagebart_core.config, imagebart_core.conditioning; "
        "heavy = [m for m in ('comfy', 'folder_paths', 'server', 'open_clip', 'torchvision') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


# third-party modules ComfyUI itself provides (never listed), and import name -> distribution name
PROVIDED_BY_COMFYUI = {"torch", "numpy", "PIL", "comfy", "comfy_api", "folder_paths", "server"}
DISTRIBUTION = {"open_clip": "open-clip-torch", "yaml": "pyyaml"}


def _third_party_imports(folders) -> set[str]:
    """Top-level names imported anywhere under ``folders`` that are neither stdlib nor this project's."""
    import ast

    own = {"imagebart_core", "nodes", "training", "imagebart_nodes", "imagebart_training"}
    names = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in own}


def test_requirements_match_the_imports():
    """requirements.txt = what the library and the nodes import (beyond ComfyUI's own packages);
    requirements-train.txt adds what only the trainer imports. Nothing listed that nothing imports."""
    runtime = _third_party_imports(["imagebart_core", "nodes"]) - PROVIDED_BY_COMFYUI
    training = _third_party_imports(["training"]) - PROVIDED_BY_COMFYUI - runtime
    req = set(_requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()))
    req_train = set(_requirement_names((ROOT / "requirements-train.txt").read_text(encoding="utf-8").splitlines()))
    assert {DISTRIBUTION.get(n, n) for n in runtime} == req
    assert {DISTRIBUTION.get(n, n) for n in training} == req_train
    assert "einops" not in req | req_train


def test_the_library_version_is_the_package_version():
    import imagebart_core

    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1) == imagebart_core.__version__
