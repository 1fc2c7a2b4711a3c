"""Write ``imagebart_core/data/imagenet_classes.json``: the 1000 ILSVRC-2012 class names in index order.

The names come from torchvision's own table (``torchvision.models._meta._IMAGENET_CATEGORIES``), which
uses the standard label order (0 = "tench", 207 = "golden retriever", 292 = "tiger"). torchvision is
needed only to run this script; the library reads the JSON file at runtime.

Usage (from the repository root)::

    python3 scripts/make_imagenet_classes.py [--out imagebart_core/data/imagenet_classes.json]
"""

import argparse
import json
import logging
from pathlib import Path

logger = logging.getLogger("make_imagenet_classes")

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "imagebart_core" / "data" / "imagenet_classes.json"


def imagenet_class_names() -> list[str]:
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    names = [str(n) for n in _IMAGENET_CATEGORIES]
    if len(names) != 1000:
        raise SystemExit(f"expected 1000 ImageNet classes from torchvision, got {len(names)}")
    checks = {0: "tench", 207: "golden retriever", 292: "tiger"}
    for index, name in checks.items():
        if names[index] != name:
            raise SystemExit(f"unexpected class order: index {index} is {names[index]!r}, expected {name!r}")
    return names


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output JSON path")
    args = parser.parse_args()
    names = imagenet_class_names()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(names, indent=0, ensure_ascii=False) + "\n", encoding="utf-8")
    logger.info("wrote %d class names to %s", len(names), args.out)


if __name__ == "__main__":
    main()
