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
    assert project["urls"]["Repository"].startswith("https://github.com/")
    comfy = data["tool"]["comfy"]
    for key in ("PublisherId", "DisplayName", "Icon", "includes", "requires-comfyui"):
        assert key in comfy, key
    assert re.fullmatch(r"[<>=!~]*\d+\.\d+\.\d+", comfy["requires-comfyui"])
    deps = _requirement_names(project["dependencies"])
    for banned in ("torch", "torchvision", "torchaudio", "numpy", "pillow"):
        assert banned not in deps
    req = _requirement_names((ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines())
    assert sorted(deps) == sorted(req), "pyproject dependencies and requirements.txt differ"
    assert "imagebart_core" in data["tool"]["setuptools"]["packages"]
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
