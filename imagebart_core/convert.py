"""``python -m imagebart_core.convert``: original CompVis ImageBART release -> native model file.

See :mod:`imagebart_core.original.convert` and ``docs/original-checkpoints.md``.
"""

from __future__ import annotations

import sys

from .original.convert import convert_release, explicit_release, locate_release, main

__all__ = ["convert_release", "explicit_release", "locate_release", "main"]

if __name__ == "__main__":
    sys.exit(main())
