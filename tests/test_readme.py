"""The README is part of the spec: its two commands and its example must work as written."""

from __future__ import annotations

import re
import subprocess
import sys

from conftest import REPO_ROOT

README = (REPO_ROOT / "README.md").read_text()


def test_readme_example_runs():
    block = README.split("<!-- readme-example -->", 1)[1]
    code = re.search(r"```python\n(.*?)```", block, re.S).group(1)
    exec(compile(code, "README.md example", "exec"), {"__name__": "readme_example"})  # noqa: S102


def test_ci_runs_exactly_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (REPO_ROOT / ".ci" / "run").read_text()


def test_readme_main_command_writes_the_demo_pngs(tmp_path):
    commands = re.findall(r"```bash\n(.*?)\n```", README, re.S)
    main = next(c for c in commands if "tools.demo" in c)
    demo_part = main.split("&&")[-1].strip().replace("demo_out", str(tmp_path / "demo_out"))
    args = demo_part.split()[1:]  # drop "python3"
    result = subprocess.run([sys.executable, *args, "--batch", "2"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    if "colour emoji" in result.stdout:  # the bundled emoji models: the showcase
        names = ["groups.png", "prompts.png", "upper_half.png", "inpainting.png", "class_edit.png", "text_edit.png",
                 "variations.png", "panorama.png", "demo_grid.png"]
    else:
        names = ["samples.png", "inpainting.png", "upper_half.png"]
        if "bundled demo models" in result.stdout:  # the shapes models: the text edit and the panorama too
            names += ["text_edit.png", "panorama.png"]
        else:
            assert "RANDOM-WEIGHT" in result.stdout
    for name in names:
        assert (tmp_path / "demo_out" / name).stat().st_size > 0
