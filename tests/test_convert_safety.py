"""Conversion safety and error reporting: hostile pickles are refused without running, broken releases
fail with messages that say what and where, outputs are atomic and never overwritten silently."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import pytest
import torch

from imagebart_core.original.convert import ConversionError, convert_release, locate_release, main, plan_conversion
from imagebart_core.original.safe_pickle import (
    OriginalFileError,
    RefusedGlobalError,
    load_checkpoint,
    load_plain_pickle,
)
from imagebart_core.original.yaml_config import read_yaml

REPO_ROOT = Path(__file__).resolve().parent.parent
FIXTURES = REPO_ROOT.parent / "shared" / "reference" / "official-fixtures"
FFHQ = "ffhq_4_scales_geometric"
CIN = "cin_5_scales_custom"

needs_fixtures = pytest.mark.skipif(not (FIXTURES / "README.md").is_file(),
                                    reason=f"original-format fixtures not found at {FIXTURES}")


class _CreatesFile:
    """Unpickling this (if allowed) calls builtins.open(path, "w"), which creates the file."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (builtins.open, (self.path, "w"))


def _release_copy(tmp_path: Path, name: str) -> Path:
    """A release folder of symlinks to the fixture files (cheap); replace entries to break it."""
    src = FIXTURES / name
    dst = tmp_path / name
    for path in src.rglob("*"):
        if path.is_file():
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dst


def _replace(path: Path, data: bytes | str) -> None:
    path.unlink()
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)


def _leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


@needs_fixtures
def test_hostile_checkpoint_is_refused_and_never_executed(tmp_path):
    rel = _release_copy(tmp_path, FFHQ)
    marker = tmp_path / "pwned.txt"
    ckpt = rel / "models" / FFHQ / "scale2.ckpt"
    good = torch.load(os.path.realpath(ckpt), weights_only=True, map_location="cpu")
    good["state_dict"]["transformer.payload"] = _CreatesFile(marker)
    ckpt.unlink()
    torch.save(good, ckpt)
    out = tmp_path / "out" / "model.safetensors"
    out.parent.mkdir()
    with pytest.raises(RefusedGlobalError) as info:
        convert_release(locate_release(rel, FFHQ), out)
    opener = "io.open" if builtins.open.__module__ == "io" else "builtins.open"  # how pickle names open()
    assert info.value.refused == [opener]
    assert f"references {opener}" in str(info.value) and "scale2.ckpt" in str(info.value)
    assert "weights_only=False" not in str(info.value)  # never advise turning the safety off
    assert not marker.exists() and not out.exists() and _leftovers(out.parent) == []
    # the payload is real: unrestricted unpickling would have created the file
    torch.load(ckpt, weights_only=False, map_location="cpu")
    assert marker.exists()


@needs_fixtures
def test_hostile_schedule_pickle_is_refused_and_never_executed(tmp_path):
    rel = _release_copy(tmp_path, CIN)
    marker = tmp_path / "pwned.txt"
    _replace(rel / "data" / "in_schedule_vs_metric.p", pickle.dumps({"bernoulli": _CreatesFile(marker)}))
    with pytest.raises(RefusedGlobalError) as info:
        convert_release(locate_release(rel, CIN), tmp_path / "m.safetensors")
    assert "open" in info.value.refused[0] and "in_schedule_vs_metric.p" in str(info.value)
    assert not marker.exists() and not (tmp_path / "m.safetensors").exists()


def test_plain_pickle_reader_allows_numpy_data_and_refuses_everything_else(tmp_path):
    import numpy as np

    ok = tmp_path / "ok.p"
    ok.write_bytes(pickle.dumps({"a": [np.float64(1.5), np.arange(3)], "b": np.zeros((2, 2), np.float32)}))
    data = load_plain_pickle(ok)
    assert data["a"][0] == 1.5 and data["a"][1].tolist() == [0, 1, 2] and data["b"].shape == (2, 2)
    bad = tmp_path / "bad.p"
    bad.write_bytes(pickle.dumps([os.getcwd, 1]))
    with pytest.raises(RefusedGlobalError, match=r"posix\.getcwd|os\.getcwd|nt\.getcwd"):
        load_plain_pickle(bad)
    objarr = tmp_path / "obj.p"
    objarr.write_bytes(pickle.dumps(np.array([1, "x"], dtype=object)))
    with pytest.raises(OriginalFileError):
        load_plain_pickle(objarr)


def test_checkpoint_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        load_checkpoint(tmp_path / "nope.ckpt")
    trunc = tmp_path / "trunc.ckpt"
    torch.save({"state_dict": {"w": torch.ones(1000)}}, trunc)
    trunc.write_bytes(trunc.read_bytes()[:500])
    with pytest.raises(OriginalFileError, match="trunc.ckpt"):
        load_checkpoint(trunc)
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(OriginalFileError, match="junk.ckpt"):
        load_checkpoint(junk)


def test_yaml_trailing_gt_is_stripped_and_bad_yaml_reported(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text('checkpoints:\n  - "a.ckpt"\nconfigs:\n  - "a.yaml"\n>\n')
    assert read_yaml(p)["checkpoints"] == ["a.ckpt"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  params: [1, 2\n")
    with pytest.raises(OriginalFileError, match="bad.yaml"):
        read_yaml(bad)
    with pytest.raises(FileNotFoundError, match="missing.yaml"):
        read_yaml(tmp_path / "missing.yaml")


@needs_fixtures
def test_release_sampling_yaml_with_stray_gt_parses():
    files = locate_release(FIXTURES / CIN, CIN)
    assert len(files.checkpoints) == 5 and files.configs[0].name == "imagenet-custom-scale1.yaml"


@needs_fixtures
def test_plan_conversion_leaves_its_argument_unchanged():
    import dataclasses

    files = locate_release(FIXTURES / CIN, CIN)
    files.indices = files.vqgan_checkpoint = files.schedule_pickle = None  # left for plan_conversion to resolve
    before = dataclasses.asdict(files)
    plan = plan_conversion(files, hash_files=False)
    assert dataclasses.asdict(files) == before
    assert plan.files is not files and plan.files.checkpoints == files.checkpoints


@needs_fixtures
def test_missing_checkpoint_is_named(tmp_path):
    rel = _release_copy(tmp_path, FFHQ)
    (rel / "models" / FFHQ / "scale3.ckpt").unlink()
    with pytest.raises(FileNotFoundError, match="scale3.ckpt"):
        convert_release(locate_release(rel, FFHQ), tmp_path / "m.safetensors")


@needs_fixtures
def test_shape_mismatch_names_key_and_file(tmp_path):
    rel = _release_copy(tmp_path, FFHQ)
    cfg = rel / "configs" / "ffhq" / "4_scales" / "ffhq-geometric-scale2.yaml"
    text = cfg.read_text()
    _replace(cfg, text.replace("enc_max_seq_len: 257", "enc_max_seq_len: 300"))
    with pytest.raises(ConversionError, match=r"scale2\.ckpt.*transformer_ema\.encoderpos_embembweight.*\(257, 12\)"):
        convert_release(locate_release(rel, FFHQ), tmp_path / "m.safetensors")


@needs_fixtures
def test_raw_weights_without_ema_and_schedule_mismatch_are_reported(tmp_path):
    rel = _release_copy(tmp_path, FFHQ)
    ckpt = rel / "models" / FFHQ / "scale1.ckpt"
    sd = torch.load(os.path.realpath(ckpt), weights_only=True, map_location="cpu")
    del sd["state_dict"]["transformer_ema.log_scalors"]
    ckpt.unlink()
    torch.save(sd, ckpt)
    with pytest.raises(ConversionError, match=r"scale1\.ckpt: no EMA copy transformer_ema\.log_scalors"):
        convert_release(locate_release(rel, FFHQ), tmp_path / "m.safetensors")
    rel2 = _release_copy(tmp_path / "b", FFHQ)
    for s in range(1, 5):
        cfg = rel2 / "configs" / "ffhq" / "4_scales" / f"ffhq-geometric-scale{s}.yaml"
        _replace(cfg, cfg.read_text().replace("redraw_prob: geometric", "redraw_prob: 0.3"))
    with pytest.raises(ConversionError, match="alphats"):
        convert_release(locate_release(rel2, FFHQ), tmp_path / "m.safetensors")


@needs_fixtures
def test_cli_refuses_overwrite_and_writes_atomically(tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    out.write_bytes(b"keep me")
    rc = main(["--release", str(FIXTURES / FFHQ), "--model", FFHQ, "--out", str(out), "--no-hash"])
    assert rc == 2 and out.read_bytes() == b"keep me" and "exists" in capsys.readouterr().err
    rc = main(["--release", str(FIXTURES / FFHQ), "--model", FFHQ, "--out", str(out), "--no-hash", "--overwrite"])
    assert rc == 0 and out.stat().st_size > 1000 and _leftovers(tmp_path) == []


@needs_fixtures
def test_cli_explicit_paths(tmp_path):
    root = FIXTURES / CIN
    args = ["--release", str(root), "--out", str(tmp_path / "m.safetensors"), "--no-hash", "--name", "cin5"]
    for s in range(1, 6):
        args += ["--ckpt", str(root / "models" / CIN / f"scale{s}.ckpt"),
                 "--config", str(root / "configs" / "imagenet" / "5_scales" / f"imagenet-custom-scale{s}.yaml")]
    assert main(args) == 0
    from imagebart_core import read_config

    cfg = read_config(tmp_path / "m.safetensors")
    assert cfg.name == "cin5" and cfg.schedule.betas[1] == pytest.approx(0.0901111290, abs=1e-9)


@needs_fixtures
def test_unknown_model_name_is_explained(tmp_path):
    with pytest.raises(ConversionError, match="no sampling config"):
        locate_release(FIXTURES / FFHQ, "my_model")
