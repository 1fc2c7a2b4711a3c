"""How far fp16 / bf16 storage of the transformers moves a converted model, measured on the parity fixtures.

    OMP_NUM_THREADS=1 python scripts/measure_storage_dtypes.py [--fixtures DIR] [--json OUT]

For each fixture release (``../shared/reference/official-fixtures``) it converts the release three times
(``--dtype fp32|fp16|bf16``), loads each file with float32 transformers (so only the storage rounding
differs) and reports, per dtype against the float32 file:

* the teacher-forced logits of every scale (the fixtures' stored inputs): max and mean absolute error,
  also relative to max |logit|;
* greedy decoding (top-k 1) of every scale from the fixtures' greedy inputs: how many of the tokens change.

It also prints the file size of each of the seven released models at each dtype (from their
architectures' parameter counts). The figures go into docs/original-checkpoints.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import imagebart_core as ib  # noqa: E402
from imagebart_core.original.presets import ORIGINAL_MODELS  # noqa: E402
from imagebart_core.original.sizes import STORAGE_DTYPES, human_bytes, model_size  # noqa: E402
from tools import precision  # noqa: E402 - the fixture helpers, shared with python -m tools.precision

FIXTURES = precision.FIXTURES
MODELS = precision.FIXTURE_MODELS


def measure(fixtures: Path, name: str, workdir: Path) -> dict:
    exp, greedy = precision.fixture_tensors(fixtures, name)
    models = {}
    for dt, torch_dtype in STORAGE_DTYPES.items():
        out = precision.convert_fixture(fixtures, name, workdir / f"{name}-{dt}.safetensors", torch_dtype)
        models[dt] = ib.load_model(out)  # float32 transformers: only the storage rounding differs
    cond = precision.fixture_condition(models["fp32"], exp)
    T = models["fp32"].n_scales
    K = models["fp32"].config.vocab_size
    result: dict = {"scales": T, "K": K, "dtypes": {}}
    logits = {dt: precision.teacher_forced_logits(model, exp, cond) for dt, model in models.items()}
    tokens = {dt: precision.greedy_scale_tokens(model, greedy, cond) for dt, model in models.items()}
    original_logits = [exp[f"scale{t}.logits"] for t in range(1, T + 1)]
    original_greedy = [greedy[f"greedy.scale{t}.x_tm1"] for t in range(1, T + 1)]
    for dt in ("fp32", "fp16", "bf16"):
        vs_fp32 = precision.logit_error(logits[dt], logits["fp32"])
        changed = precision.token_changes(tokens[dt], tokens["fp32"])
        result["dtypes"][dt] = {
            "greedy_rows_changed": changed["rows_changed"],  # (scale, item, first differing position) per row
            "logits_max_abs_vs_fp32": vs_fp32["max_abs"],
            "logits_mean_abs_vs_fp32": vs_fp32["mean_abs"],
            "logits_max_abs_vs_original": precision.logit_error(logits[dt], original_logits)["max_abs"],
            "max_abs_logit": max(float(x.abs().max()) for x in original_logits),
            "greedy_tokens_changed_vs_fp32": changed["changed"],
            "greedy_tokens_changed_vs_original": precision.token_changes(tokens[dt], original_greedy)["changed"],
            "greedy_tokens": changed["tokens"],
            "per_scale_max_abs_vs_fp32": [s["max_abs"] for s in vs_fp32["per_scale"]],
            "file_bytes": (workdir / f"{name}-{dt}.safetensors").stat().st_size,
        }
    return result


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", default=str(FIXTURES))
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    torch.set_grad_enabled(False)
    figures: dict = {"fixtures": {}, "released_file_bytes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            figures["fixtures"][name] = measure(Path(args.fixtures), name, Path(tmp))
    for name, r in figures["fixtures"].items():
        _say(f"\n{name} (T={r['scales']}, K={r['K']}, max |logit| {r['dtypes']['fp32']['max_abs_logit']:.2f})")
        _say("dtype  logits max|d| mean|d| vs fp32   max|d| vs original   greedy tokens changed vs fp32")
        for dt, d in r["dtypes"].items():
            _say(f"{dt:5}  {d['logits_max_abs_vs_fp32']:.3e}  {d['logits_mean_abs_vs_fp32']:.3e}       "
                  f"{d['logits_max_abs_vs_original']:.3e}            {d['greedy_tokens_changed_vs_fp32']} / "
                  f"{d['greedy_tokens']}  rows (scale, item, first position): {d['greedy_rows_changed']}")
    _say("\nreleased model               params (transformers)   fp32       fp16       bf16   largest scale fp32/fp16")
    for name in ORIGINAL_MODELS:
        s = model_size(name)
        sizes = {dt: s.file_bytes(dt) for dt in STORAGE_DTYPES}
        figures["released_file_bytes"][name] = {**sizes, "transformer_params": s.transformer_params,
                                                "largest_scale_params": s.largest_scale_params}
        _say(f"{name:28} {s.transformer_params / 1e9:6.3f} B   " + "  ".join(f"{human_bytes(v):>9}" for v in sizes.values())
              + f"   {human_bytes(s.scale_bytes('fp32'))} / {human_bytes(s.scale_bytes('fp16'))}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
