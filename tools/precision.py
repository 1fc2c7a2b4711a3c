"""How far running the transformers in bf16 / fp16 moves a model, measured on the two parity fixtures.

    OMP_NUM_THREADS=1 taskset -c 1 python -m tools.precision [--fixtures DIR] [--json OUT]

For each fixture release (``../shared/reference/official-fixtures``: small random-weight releases in the
original layout with tensors recorded from the original code) it converts the release once (float32 file), loads
that file with ``load_model(dtype=fp32 | bf16 | fp16)`` on the CPU (the VQGAN and the sampling math stay float32)
and reports, per dtype against float32:

* the teacher-forced logits of every scale (``model.scale_logits`` on the fixture's recorded inputs): max and mean
  absolute error, and the max error relative to max |logit| of that scale;
* the share of greedy tokens that change: (a) argmax of those teacher-forced logits; (b) the whole chain run
  greedily (top-k 1) through the public API from the same noise (``random_codes`` + one ``reverse_step`` per
  scale, which runs the KV-cached token steps), compared level by level: a scale whose input already differs
  passes the difference on; (c) each scale alone, from the fixture's greedy inputs (every scale gets the same
  input in every dtype).

The helpers here (converting a fixture, its teacher-forced logits, greedy tokens per scale, error and token-change
figures) are shared with ``scripts/measure_storage_dtypes.py``, which measures *file storage* dtypes loaded back
into float32. No timing figures: see ``python -m tools.bench`` for those.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch

import imagebart_core as ib
from imagebart_core.chain.static_step import STEP_MODES
from imagebart_core.original.convert import convert_release, locate_release
from tools.bench import cpu_name
from tools.records import provenance, write_json

FIXTURES = Path(__file__).resolve().parent.parent.parent / "shared" / "reference" / "official-fixtures"
FIXTURE_MODELS = ("ffhq_4_scales_geometric", "cin_5_scales_custom")
RUNTIME_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The noise seed of the greedy chain (b); with top-k 1 the draws do not matter, only x_T does.
CHAIN_SEED = 0


# -- fixtures ---------------------------------------------------------------------------------------------------
def load_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def fixture_tensors(fixtures: Path, name: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(expected, greedy) tensors the original code recorded for fixture ``name``."""
    d = Path(fixtures) / name
    return load_tensors(d / "expected.safetensors"), load_tensors(d / "greedy.safetensors")


def convert_fixture(fixtures: Path, name: str, out: Path, storage: torch.dtype = torch.float32) -> Path:
    """Convert fixture release ``name`` to a native model file ``out`` with transformers stored in ``storage``."""
    return convert_release(locate_release(Path(fixtures) / name, name), out, hash_files=False, dtype=storage)


def fixture_condition(model: ib.ImageBART, expected: dict[str, torch.Tensor]):
    """The fixture's class condition (batch 2), or None for an unconditional model."""
    return model.class_condition(expected["class_labels"].tolist()) if "class_labels" in expected else None


# -- what a model computes on them ----------------------------------------------------------------------------------
@torch.no_grad()
def teacher_forced_logits(model: ib.ImageBART, expected: dict[str, torch.Tensor], cond) -> list[torch.Tensor]:
    """Per scale 1..T: float32 [B, N, K] logits of ``model.scale_logits`` on the fixture's recorded inputs."""
    return [model.scale_logits(t, expected[f"scale{t}.x_t"], expected[f"scale{t}.x_tm1"], cond).float()
            for t in range(1, model.n_scales + 1)]


@torch.no_grad()
def greedy_scale_tokens(model: ib.ImageBART, greedy: dict[str, torch.Tensor], cond,
                        item_by_item: bool = False) -> list[torch.Tensor]:
    """Per scale 1..T: int64 [B, h, w] tokens of one greedy (top-k 1) reverse step from the fixture's input of
    that scale (every scale alone, through the KV-cached token steps). ``item_by_item``: each batch item on its
    own (batch-1 steps: the steps ``step_mode="compiled"`` compiles on CPU), the results stacked."""
    K, (h, w) = model.config.vocab_size, model.config.grid
    out = []
    for t in range(1, model.n_scales + 1):
        x_t = greedy[f"greedy.scale{t}.x_t"]
        codes = ib.Codes(x_t.view(x_t.shape[0], h, w), t + 1, model.codebook_id, K)

        def step(c: ib.Codes, cnd) -> torch.Tensor:
            return model.reverse_step(c, cnd, steps=1, top_k=1, temperature=1.0, seed=0).tokens

        out.append(_per_item(step, codes, cond) if item_by_item else step(codes, cond))
    return out


@torch.no_grad()
def greedy_chain_tokens(model: ib.ImageBART, batch: int, cond, seed: int = CHAIN_SEED,
                        item_by_item: bool = False) -> list[torch.Tensor]:
    """The whole chain, greedy (top-k 1), from ``random_codes(batch, seed)``: per scale 1..T the int64 [B, h, w]
    tokens that scale wrote (level t); one public ``reverse_step`` per scale, so each level can be compared.
    ``item_by_item`` as in :func:`greedy_scale_tokens`."""
    start = model.random_codes(batch, seed=seed)

    def chain(codes: ib.Codes, cnd) -> torch.Tensor:
        levels = []
        for _ in range(model.n_scales, 0, -1):
            codes = model.reverse_step(codes, cnd, steps=1, top_k=1, temperature=1.0, seed=seed)
            levels.append(codes.tokens)
        return torch.stack(levels[::-1])  # [T, B, h, w], level 1 first

    levels = _per_item(chain, start, cond, dim=1) if item_by_item else chain(start, cond)
    return list(levels.unbind(0))


def _per_item(fn, codes: ib.Codes, cond, dim: int = 0) -> torch.Tensor:
    """``fn(codes, cond)`` for each batch item alone (``Codes.select`` / ``Condition.select``), concatenated
    along ``dim`` (the batch dimension of what ``fn`` returns)."""
    parts = [fn(codes.select([i]), None if cond is None else cond.select([i])) for i in range(codes.batch_size)]
    return torch.cat(parts, dim=dim)


# -- figures ------------------------------------------------------------------------------------------------------
def logit_error(logits: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> dict:
    """Error of ``logits`` against ``reference`` (per scale, float [B, N, K] each): per scale and overall max abs,
    mean abs, and max abs relative to max |reference logit| (of that scale; overall: of all scales)."""
    per_scale = []
    for a, b in zip(logits, reference, strict=True):
        d = (a.float() - b.float()).abs()
        ref_max = float(b.abs().max())
        per_scale.append({"max_abs": float(d.max()), "mean_abs": float(d.mean()),
                          "max_rel": float(d.max()) / ref_max if ref_max > 0 else 0.0, "max_abs_logit": ref_max})
    ref_max = max(s["max_abs_logit"] for s in per_scale)
    total = sum(a.numel() for a in reference)
    return {
        "max_abs": max(s["max_abs"] for s in per_scale),
        "mean_abs": sum(s["mean_abs"] * a.numel() for s, a in zip(per_scale, reference)) / total,
        "max_rel": max(s["max_abs"] for s in per_scale) / ref_max if ref_max > 0 else 0.0,
        "max_abs_logit": ref_max,
        "per_scale": per_scale,
    }


def token_changes(tokens: Sequence[torch.Tensor], reference: Sequence[torch.Tensor]) -> dict:
    """How many tokens of ``tokens`` differ from ``reference`` (per scale, [B, ...] with the same number of tokens
    per item, e.g. [B, h, w] against [B, h*w]): per scale and
    overall counts and shares, and (scale, item, first differing position) of each row that changed."""
    per_scale, rows = [], []
    for t, (a, b) in enumerate(zip(tokens, reference, strict=True), start=1):
        if a.shape[0] != b.shape[0] or a.numel() != b.numel():
            raise ValueError(f"scale {t}: token shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
        diff = a.reshape(a.shape[0], -1) != b.reshape(b.shape[0], -1)  # [B, N]
        per_scale.append({"changed": int(diff.sum()), "tokens": diff.numel(), "share": float(diff.float().mean())})
        rows += [[t, i, int(r.nonzero()[0])] for i, r in enumerate(diff) if bool(r.any())]
    changed = sum(s["changed"] for s in per_scale)
    total = sum(s["tokens"] for s in per_scale)
    return {"changed": changed, "tokens": total, "share": changed / total, "per_scale": per_scale,
            "rows_changed": rows}


def argmax_tokens(logits: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Greedy choice of teacher-forced logits: per scale int64 [B, N]."""
    return [a.argmax(dim=-1) for a in logits]


# -- the report -------------------------------------------------------------------------------------------------------
def runtime_precision(model_file: Path, fixtures: Path, name: str,
                      dtypes: Sequence[str] = tuple(RUNTIME_DTYPES), step_mode: str = "eager") -> dict:
    """Figures of one fixture: ``model_file`` (its converted float32 file) loaded in each of ``dtypes`` on the
    CPU, every figure against the float32 load. ``step_mode`` (``ImageBART.step_mode``) for the greedy token
    steps of every load; other than eager, the greedy figures run item by item (batch-1 steps, the ones the CPU
    compiles). Returns a JSON-ready dict (see the module docstring)."""
    item_by_item = step_mode != "eager"
    expected, greedy = fixture_tensors(fixtures, name)
    wanted = ["fp32", *[d for d in dtypes if d != "fp32"]]
    unknown = [d for d in wanted if d not in RUNTIME_DTYPES]
    if unknown:
        raise ValueError(f"dtypes {unknown} unknown; choose from {sorted(RUNTIME_DTYPES)}")
    runs = {}
    for dt in wanted:
        model = ib.load_model(model_file, "cpu", RUNTIME_DTYPES[dt])
        model.step_mode = step_mode
        cond = fixture_condition(model, expected)
        batch = expected["scale1.x_t"].shape[0]
        logits = teacher_forced_logits(model, expected, cond)
        runs[dt] = {
            "logits": logits,
            "argmax": argmax_tokens(logits),
            "chain": greedy_chain_tokens(model, batch, cond, item_by_item=item_by_item),
            "per_scale": greedy_scale_tokens(model, greedy, cond, item_by_item=item_by_item),
            "weight_dtype": str(next(model.scales[0].parameters()).dtype).replace("torch.", ""),
            "logits_dtype": str(model.scale_logits(1, expected["scale1.x_t"], expected["scale1.x_tm1"], cond).dtype
                                ).replace("torch.", ""),
        }
        del model
    ref = runs["fp32"]
    config = ib.read_config(model_file)
    result: dict = {"scales": config.n_scales, "K": config.vocab_size, "grid": list(config.grid),
                    "batch": int(expected["scale1.x_t"].shape[0]), "chain_seed": CHAIN_SEED, "step_mode": step_mode,
                    "greedy_item_by_item": item_by_item, "dtypes": {}}
    for dt in [d for d in dtypes if d in runs]:
        r = runs[dt]
        result["dtypes"][dt] = {
            "weight_dtype": r["weight_dtype"],
            "logits_dtype": r["logits_dtype"],
            "teacher_forced_logits_vs_fp32": logit_error(r["logits"], ref["logits"]),
            "teacher_forced_argmax_changed_vs_fp32": token_changes(r["argmax"], ref["argmax"]),
            "greedy_chain_tokens_changed_vs_fp32": token_changes(r["chain"], ref["chain"]),
            "greedy_per_scale_tokens_changed_vs_fp32": token_changes(r["per_scale"], ref["per_scale"]),
        }
    return result


def format_report(figures: dict) -> str:
    lines = []
    for name, r in figures["fixtures"].items():
        lines.append(f"\n{name} (T={r['scales']}, K={r['K']}, batch {r['batch']}, grid {r['grid'][0]}x{r['grid'][1]})")
        lines.append("dtype  scale  logits max|d|  mean|d|    max|d|/max|logit|  argmax changed  chain changed  "
                     "per-scale changed")
        for dt, d in r["dtypes"].items():
            err = d["teacher_forced_logits_vs_fp32"]
            am, ch, ps = (d[k] for k in ("teacher_forced_argmax_changed_vs_fp32",
                                         "greedy_chain_tokens_changed_vs_fp32",
                                         "greedy_per_scale_tokens_changed_vs_fp32"))
            for t in range(r["scales"]):
                e = err["per_scale"][t]
                lines.append(f"{dt:5}  {t + 1:>5}  {e['max_abs']:.3e}      {e['mean_abs']:.3e}  {e['max_rel']:.3e}"
                             f"          {am['per_scale'][t]['changed']:>4}/{am['per_scale'][t]['tokens']}"
                             f"       {ch['per_scale'][t]['changed']:>4}/{ch['per_scale'][t]['tokens']}"
                             f"       {ps['per_scale'][t]['changed']:>4}/{ps['per_scale'][t]['tokens']}")
            lines.append(f"{dt:5}    all  {err['max_abs']:.3e}      {err['mean_abs']:.3e}  {err['max_rel']:.3e}"
                         f"          {am['share']:.2%}         {ch['share']:.2%}          {ps['share']:.2%}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m tools.precision", description=__doc__.split("\n\n")[0])
    ap.add_argument("--fixtures", default=str(FIXTURES), help="the official-fixtures folder (default: %(default)s)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    ap.add_argument("--dtypes", nargs="+", default=list(RUNTIME_DTYPES), choices=list(RUNTIME_DTYPES))
    ap.add_argument("--step-mode", default="eager", choices=list(STEP_MODES),
                    help="ImageBART.step_mode of the greedy token steps; other than eager they run item by item "
                         "(batch 1: on CPU only one-row steps are compiled)")
    args = ap.parse_args(argv)
    fixtures = Path(args.fixtures)
    if not (fixtures / FIXTURE_MODELS[0]).is_dir():
        raise SystemExit(f"--fixtures {fixtures}: no {FIXTURE_MODELS[0]} folder there (the official fixtures)")
    figures: dict = {**provenance("tools.precision", argv), "threads": torch.get_num_threads(), "device": "cpu",
                     "cpu": cpu_name(), "fixtures": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in FIXTURE_MODELS:
            path = convert_fixture(fixtures, name, Path(tmp) / f"{name}-fp32.safetensors")
            with torch.no_grad():
                figures["fixtures"][name] = runtime_precision(path, fixtures, name, args.dtypes, args.step_mode)
    sys.stdout.write(format_report(figures) + "\n")
    write_json(args.json, figures)
    return figures


if __name__ == "__main__":
    main()
