"""The original noise schedules (``redraw_prob`` in the per-scale yamls) as exact float32 betas.

``betas[t]`` is the original ``temperature_range[t]`` (t = 0..T, ``betas[0] = 0``, ``betas[T] = 1``).

* ``"geometric"``: ``beta_t = 1 / (T - t + 1)`` computed in float32.
* ``"<dset>_<dist>_<metric>"`` / ``"<dist>_<metric>"`` (dset defaults to ``in``): alpha-bars at
  ``T + 1`` equally spaced values of an image-quality metric, read off the piecewise-linear curve
  stored in ``data/<dset>_schedule_vs_metric.p``; all arithmetic in float64, cast to float32 at the end.
* ``"alphacum:<a0>,<a1>,..."``: alpha-bar given directly.
* a number: a constant beta (with the last one 1).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..schedule import geometric_betas
from .safe_pickle import OriginalFileError, load_plain_pickle

logger = logging.getLogger(__name__)

DISTRIBUTIONS = ("bernoulli", "gaussian")
METRICS = ("FID", "IS", "PSNR", "PSIM", "SSIM")


def parse_redraw_prob(value) -> dict:
    """Describe a ``redraw_prob`` value: ``{"kind": ..., ...}`` (no files read)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return {"kind": "constant", "beta": float(value)}
    if not isinstance(value, str):
        raise OriginalFileError(f"redraw_prob must be a string or a number, got {value!r}")
    if value == "geometric":
        return {"kind": "geometric"}
    if value.startswith("alphacum:"):
        try:
            abar = [float(v) for v in value[len("alphacum:"):].split(",")]
        except ValueError as exc:
            raise OriginalFileError(f"redraw_prob {value!r}: bad alpha-bar list") from exc
        return {"kind": "alphacum", "alphacum": abar}
    parts = value.split("_")
    if len(parts) == 2:
        parts = ["in"] + parts
    if len(parts) == 3 and parts[1] in DISTRIBUTIONS and parts[2] in METRICS:
        return {"kind": "metric", "dataset": parts[0], "dist": parts[1], "metric": parts[2],
                "pickle": f"data/{parts[0]}_schedule_vs_metric.p"}
    raise OriginalFileError(
        f"unknown redraw_prob {value!r}: expected 'geometric', '<dist>_<metric>' or '<dset>_<dist>_<metric>' "
        f"(dist in {DISTRIBUTIONS}, metric in {METRICS}), 'alphacum:...' or a number"
    )


def _crossing(abar: np.ndarray, y: np.ndarray) -> float:
    """First alpha-bar where the polyline (abar, y) changes sign; linear interpolation in float64."""
    s = np.sign(y)
    changes = np.nonzero(s[1:] != s[:-1])[0]
    if changes.size == 0:
        raise OriginalFileError("schedule pickle: the metric curve never reaches a target value")
    i = int(changes[0])
    if y[i] == 0.0:
        return float(abar[i])
    ratio = abs(y[i + 1] / y[i])
    return float(abar[i] + (abar[i + 1] - abar[i]) / (ratio + 1.0))


def metric_betas(curves: dict, dist: str, metric: str, n_steps: int, where: str = "") -> np.ndarray:
    """float32 [n_steps]: betas whose alpha-bars are equally spaced in ``metric`` (see module doc)."""
    try:
        table = curves[dist]
        abar = np.asarray(table["alphacum"], dtype=np.float64)
        values = np.asarray(table[metric], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise OriginalFileError(f"{where}: schedule pickle has no {dist}/{metric} curve ({exc})") from exc
    if values.ndim == 2:
        values = values[:, 0]  # (mean, std) pairs: the mean
    if abar.ndim != 1 or values.shape != abar.shape or abar.size < 2:
        raise OriginalFileError(f"{where}: schedule pickle {dist}/{metric}: curve shapes {abar.shape} / {values.shape}")
    equi = np.array([_crossing(abar, values - v) for v in np.linspace(values.min(), values.max(), n_steps)])
    with np.errstate(divide="ignore", invalid="ignore"):
        beta = 1.0 - equi[1:] / equi[:-1]
    return np.concatenate([np.zeros(1), beta]).astype(np.float32)


def schedule_betas(redraw_prob, n_steps: int, root: Path | None = None, pickle_path: Path | None = None
                   ) -> tuple[np.ndarray, dict]:
    """Exact float32 betas [n_steps] (= T + 1) of a ``redraw_prob`` and a provenance dict.

    ``root``: the release folder (``data/...`` pickles are relative to it); ``pickle_path`` overrides.
    """
    spec = parse_redraw_prob(redraw_prob)
    kind = spec["kind"]
    if kind == "geometric":
        betas = np.asarray(geometric_betas(n_steps - 1), dtype=np.float32)  # the library's schedule
    elif kind == "constant":
        betas = np.full(n_steps, spec["beta"], np.float32)
        betas[0], betas[-1] = 0.0, 1.0
    elif kind == "alphacum":
        abar = np.asarray(spec["alphacum"], np.float64)
        if abar.size != n_steps:
            raise OriginalFileError(f"redraw_prob alphacum list has {abar.size} values, expected {n_steps}")
        with np.errstate(divide="ignore", invalid="ignore"):
            betas = np.concatenate([[0.0], 1.0 - abar[1:] / abar[:-1]]).astype(np.float32)
    else:
        path = pickle_path or ((root or Path(".")) / spec["pickle"])
        curves = load_plain_pickle(path)
        betas = metric_betas(curves, spec["dist"], spec["metric"], n_steps, where=str(path))
        spec = dict(spec, pickle=str(path))
    if betas.shape != (n_steps,) or not np.isfinite(betas).all():
        raise OriginalFileError(f"redraw_prob {redraw_prob!r} gave invalid betas {betas.tolist()}")
    return betas, spec


def betas_from_alphats(alphats: np.ndarray) -> np.ndarray:
    """Betas recovered from a checkpoint's float32 ``alphats`` buffer (1 - alpha in float32).

    For alpha in [0.5, 1] (and alpha = 0) ``1 - alpha`` is exact, so ``1 - beta`` gives back the stored
    alpha bit for bit; the beta itself can differ from the original by one float32 rounding.
    """
    a = np.asarray(alphats, np.float32)
    return (np.float32(1.0) - a).astype(np.float32)
