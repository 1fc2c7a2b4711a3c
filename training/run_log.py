"""What a run reports: the run log (log.csv / log.jsonl) and the progress bar."""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from imagebart_core.fileio import atomic_write_text

log = logging.getLogger(__name__)

class RunLog:
    """Appends one row per logged step to ``log.csv`` (columns fixed by the first row) and ``log.jsonl``
    in the run folder, on the main process only. Reading: ``pandas.read_csv(run/"log.csv")``.

    ``resume_step``: the step training continues from. Rows of later steps (logged after the checkpoint a
    killed run resumes from, and about to be logged again) are dropped first, so the log has one row per step.
    """

    def __init__(self, out: Path, enabled: bool, columns: list[str] | None = None, resume_step: int | None = None):
        self.out, self.enabled = out, enabled
        self.columns: list[str] | None = list(columns) if columns else None
        self._new = True
        if enabled and resume_step is not None:
            self._drop_rows_after(int(resume_step))
        if enabled and (out / "log.csv").is_file():
            with open(out / "log.csv", newline="") as fh:
                header = next(csv.reader(fh), None)
            self.columns = header
            self._new = False

    def _drop_rows_after(self, step: int) -> None:
        """Rewrite log.csv / log.jsonl (atomically) without the rows of steps after ``step``."""
        csv_path, jsonl_path = self.out / "log.csv", self.out / "log.jsonl"
        if csv_path.is_file():
            with open(csv_path, newline="") as fh:
                lines = fh.read().splitlines(keepends=True)
            rows = list(csv.reader(lines))
            if rows and "step" in rows[0]:
                col = rows[0].index("step")
                keep = [lines[0]] + [line for line, r in zip(lines[1:], rows[1:]) if not _after(r[col:col + 1], step)]
                if len(keep) != len(lines):
                    atomic_write_text(csv_path, "".join(keep))
        if jsonl_path.is_file():
            lines = jsonl_path.read_text(encoding="utf-8").splitlines(keepends=True)
            keep = [line for line in lines if not _after([str(_json_step(line))], step)]
            if len(keep) != len(lines):
                atomic_write_text(jsonl_path, "".join(keep))

    def write(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        with open(self.out / "log.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        new = self._new
        self._new = False
        if self.columns is None:
            self.columns = list(row)
        with open(self.out / "log.csv", "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=self.columns, extrasaction="ignore", restval="")
            if new:
                w.writeheader()
            w.writerow(row)


def _after(cell: list[str], step: int) -> bool:
    try:
        return int(float(cell[0])) > step
    except (IndexError, ValueError):
        return False


def _json_step(line: str) -> Any:
    try:
        return json.loads(line).get("step")
    except (ValueError, AttributeError):
        return None


class ProgressBar:
    """A tqdm bar (main process, interactive) or a plain log line every ``every`` steps."""

    def __init__(self, total: int, initial: int, enabled: bool, desc: str, every: int = 50):
        self.bar = None
        self.every = max(1, every)
        self.enabled = enabled
        self.total = total
        if enabled:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True, file=sys.stderr)
            except ImportError:
                self.bar = None
        self.t0 = time.time()
        self.start = initial

    def update(self, step: int, stats: dict[str, float]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix({k: f"{v:.4g}" for k, v in stats.items()}, refresh=False)
        elif step % self.every == 0 or step == self.total:
            txt = " ".join(f"{k}={v:.4g}" for k, v in stats.items())
            sys.stderr.write(f"step {step}/{self.total} {txt}\n")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
