"""Compare two model files tensor by tensor: does a re-run of a recipe give the same files?

    python -m training.compare_models models/imagebart-emoji-class.safetensors runs/emoji/models/imagebart-emoji-class.safetensors

Reads both ``.safetensors`` files (never unpickles) and reports the tensors that exist in only one of them,
those whose dtype or shape differ, those whose values differ (with the largest absolute difference), and
whether the metadata (the model config JSON) is equal. Exit status 0 when every tensor and the metadata are
identical, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def compare_files(a: str | Path, b: str | Path) -> dict:
    """-> ``{"same": bool, "tensors": n, "only_in_a": [...], "only_in_b": [...], "mismatched": [...],
    "different": {name: max_abs_diff}, "metadata_equal": bool, "bytes_equal": bool}``."""
    import torch
    from safetensors import safe_open

    with safe_open(str(a), "pt") as fa, safe_open(str(b), "pt") as fb:
        ka, kb = set(fa.keys()), set(fb.keys())
        mismatched, different = [], {}
        for name in sorted(ka & kb):
            x, y = fa.get_tensor(name), fb.get_tensor(name)
            if x.dtype != y.dtype or x.shape != y.shape:
                mismatched.append(f"{name}: {x.dtype}{tuple(x.shape)} vs {y.dtype}{tuple(y.shape)}")
            elif not torch.equal(x, y):
                different[name] = float((x.double() - y.double()).abs().max()) if x.numel() else 0.0
        meta_equal = (fa.metadata() or {}) == (fb.metadata() or {})
    report = {"tensors": len(ka | kb), "only_in_a": sorted(ka - kb), "only_in_b": sorted(kb - ka),
              "mismatched": mismatched, "different": different, "metadata_equal": meta_equal,
              "bytes_equal": Path(a).read_bytes() == Path(b).read_bytes()}
    report["same"] = not (report["only_in_a"] or report["only_in_b"] or mismatched or different) and meta_equal
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.compare_models", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", help="a model file (.safetensors)")
    p.add_argument("b", help="the file to compare it with")
    args = p.parse_args(argv)
    for path in (args.a, args.b):
        if not Path(path).is_file():
            raise SystemExit(f"error: {path} is not a file")
    report = compare_files(args.a, args.b)
    print(json.dumps(report, indent=1))  # noqa: T201 (CLI summary)
    return 0 if report["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
