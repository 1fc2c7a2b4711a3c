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
from imagebart_core.original.convert import convert_release, locate_release  # noqa: E402
from imagebart_core.original.presets import ORIGINAL_MODELS  # noqa: E402
from imagebart_core.original.sizes import STORAGE_DTYPES, human_bytes, model_size  # noqa: E402

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "official-fixtures"
MODELS = ("ffhq_4_scales_geometric", "cin_5_scales_custom")


def _load(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def measure(fixtures: Path, name: str, workdir: Path) -> dict:
    exp = _load(fixtures / name / "expected.safetensors")
    greedy = _load(fixtures / name / "greedy.safetensors")
    models = {}
    for dt, torch_dtype in STORAGE_DTYPES.items():
        out = convert_release(locate_release(fixtures / name, name), workdir / f"{name}-{dt}.safetensors",
                              hash_files=False, dtype=torch_dtype)
        models[dt] = ib.load_model(out)  # float32 transformers: only the storage rounding differs
    cond = None
    if "class_labels" in exp:
        cond = models["fp32"].class_condition(exp["class_labels"].tolist())
    T = models["fp32"].n_scales
    K = models["fp32"].config.vocab_size
    result: dict = {"scales": T, "K": K, "dtypes": {}}
    logits, tokens = {}, {}
    for dt, model in models.items():
        logits[dt] = [model.scale_logits(t, exp[f"scale{t}.x_t"], exp[f"scale{t}.x_tm1"], cond) for t in range(1, T + 1)]
        tokens[dt] = []
        for t in range(1, T + 1):
            codes = ib.Codes(greedy[f"greedy.scale{t}.x_t"].view(2, 16, 16), t + 1, model.codebook_id, K)
            tokens[dt].append(model.reverse_step(codes, cond, steps=1, top_k=1, temperature=1.0, seed=0).tokens)
    ref_max = max(float(exp[f"scale{t}.logits"].abs().max()) for t in range(1, T + 1))
    for dt in ("fp32", "fp16", "bf16"):
        diffs = [(a - b).abs() for a, b in zip(logits[dt], logits["fp32"])]
        vs_original = max(float((a - exp[f"scale{t}.logits"]).abs().max()) for t, a in enumerate(logits[dt], 1))
        changed = sum(int((a != b).sum()) for a, b in zip(tokens[dt], tokens["fp32"]))
        total = sum(a.numel() for a in tokens["fp32"])
        ref_greedy = sum(int((a.view(2, 256) != greedy[f"greedy.scale{t}.x_tm1"]).sum())
                         for t, a in enumerate(tokens[dt], 1))
        diverged = []  # (scale, item, first differing position) of each greedy row that changed
        for t, (a, b) in enumerate(zip(tokens[dt], tokens["fp32"]), 1):
            for i, (ra, rb) in enumerate(zip(a.view(a.shape[0], -1), b.view(b.shape[0], -1))):
                if not torch.equal(ra, rb):
                    diverged.append([t, i, int((ra != rb).nonzero()[0])])
        result["dtypes"][dt] = {
            "greedy_rows_changed": diverged,
            "logits_max_abs_vs_fp32": max(float(d.max()) for d in diffs),
            "logits_mean_abs_vs_fp32": float(torch.cat([d.flatten() for d in diffs]).mean()),
            "logits_max_abs_vs_original": vs_original,
            "max_abs_logit": ref_max,
            "greedy_tokens_changed_vs_fp32": changed,
            "greedy_tokens_changed_vs_original": ref_greedy,
            "greedy_tokens": total,
            "per_scale_max_abs_vs_fp32": [float(d.max()) for d in diffs],
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
