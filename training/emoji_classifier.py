"""A small emoji-group classifier: the yardstick of the emoji models' samples (issue 15, "Must show 1").

    python -m training.emoji_classifier --data runs/emoji/emoji/train --heldout runs/emoji/emoji/heldout \\
        --out runs/emoji/classifier/group_classifier.safetensors

A four-layer CNN on 64x64 RGB pictures (strided 3x3 convolutions, GroupNorm, GELU, global average pooling to
a ``4 * width`` feature vector, one linear layer to the groups). It trains on the training split of
``training.make_emoji`` with **group-balanced batches** (each item's group is drawn uniformly, then one of its
pictures: people & body holds more than half of the training emoji and would otherwise dominate), AdamW with a
cosine schedule, a fixed seed and one thread, so a re-run gives the same weights. It reports its held-out
accuracy (overall and the mean of the per-group recalls) and writes one ``.safetensors`` file with its settings,
class names and held-out accuracy in the metadata.

:meth:`GroupClassifier.features` (the l2-normalised pooled features) is the feature space in which the text
model's samples are compared with emoji pictures (training.emoji_eval).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from imagebart_core.fileio import atomic_path

log = logging.getLogger(__name__)

FORMAT = "imagebart-emoji-group-classifier/1"


@dataclass
class ClassifierSettings:
    """Everything that decides the classifier's weights."""

    width: int = 32
    steps: int = 1500
    batch: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 50
    seed: int = 0


class GroupClassifier(nn.Module):
    """images float ``[B, 3, 64, 64]`` in 0..1 -> group logits ``[B, n_classes]`` (any side that is a multiple
    of 16 works; the features are globally pooled)."""

    def __init__(self, n_classes: int, width: int = 32):
        super().__init__()
        w = width
        chans = [(3, w, 2), (w, 2 * w, 2), (2 * w, 4 * w, 2), (4 * w, 4 * w, 2)]  # 64 -> 32 -> 16 -> 8 -> 4 px
        layers: list[nn.Module] = []
        for c_in, c_out, stride in chans:
            layers += [nn.Conv2d(c_in, c_out, 3, stride, 1), nn.GroupNorm(8, c_out), nn.GELU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(4 * w, n_classes)
        self.n_classes, self.width = n_classes, width

    def pooled(self, images: torch.Tensor) -> torch.Tensor:
        """images ``[B, 3, H, W]`` 0..1 -> ``[B, 4 * width]`` pooled features."""
        return self.body(images * 2 - 1).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.pooled(images))  # [B, n_classes]

    @torch.no_grad()
    def features(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """images ``[B, 3, H, W]`` 0..1 -> l2-normalised features ``[B, 4 * width]`` (eval mode)."""
        was = self.training
        self.eval()
        out = torch.cat([self.pooled(images[i:i + batch]) for i in range(0, images.shape[0], batch)])
        self.train(was)
        return F.normalize(out, dim=1)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """images ``[B, 3, H, W]`` 0..1 -> int64 ``[B]`` predicted group indices."""
        was = self.training
        self.eval()
        out = torch.cat([self(images[i:i + batch]).argmax(-1) for i in range(0, images.shape[0], batch)])
        self.train(was)
        return out


def load_split(folder: str | Path, image_size: int = 64) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """An image folder (group sub-folders) -> (uint8 ``[N, 3, S, S]``, int64 labels ``[N]``, class names)."""
    from .data import DataError, ImageFolder

    ds = ImageFolder(folder, image_size)
    if len(ds) == 0 or not ds.has_labels():
        raise DataError(f"{folder} has no images in group sub-folders")
    images = torch.stack([((ds.load(i) + 1) * 127.5).round().to(torch.uint8) for i in range(len(ds))])
    return images, torch.tensor(ds.labels, dtype=torch.long), ds.class_names


def accuracy(clf: GroupClassifier, images: torch.Tensor, labels: torch.Tensor) -> dict:
    """uint8 or 0..1 float images ``[N, 3, S, S]``, labels ``[N]`` -> overall accuracy, balanced accuracy (mean
    per-group recall over the groups present) and the per-group recalls."""
    x = images.float() / 255 if images.dtype == torch.uint8 else images
    pred = clf.predict(x)
    hit = (pred == labels).float()
    per = {int(c): float(hit[labels == c].mean()) for c in labels.unique()}
    return {"accuracy": round(float(hit.mean()), 4), "balanced_accuracy": round(sum(per.values()) / len(per), 4),
            "per_group": {int(c): round(v, 4) for c, v in per.items()}, "images": int(labels.numel())}


def train(images: torch.Tensor, labels: torch.Tensor, n_classes: int, s: ClassifierSettings,
          log_every: int = 100) -> GroupClassifier:
    """Train on uint8 images ``[N, 3, S, S]`` with int64 labels ``[N]`` (group-balanced batches); deterministic
    for a given ``s.seed`` and thread count."""
    gen = torch.Generator().manual_seed(s.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)
        clf = GroupClassifier(n_classes, s.width)
    members = [torch.nonzero(labels == c).flatten() for c in range(n_classes)]
    present = [c for c in range(n_classes) if members[c].numel()]
    if not present:
        raise ValueError("no labelled images to train the classifier on")
    opt = torch.optim.AdamW(clf.parameters(), lr=s.lr, weight_decay=s.weight_decay)
    clf.train()
    t0 = time.perf_counter()
    for step in range(s.steps):
        lr = s.lr * min(1.0, (step + 1) / max(1, s.warmup)) * 0.5 * (1 + math.cos(math.pi * step / s.steps))
        for g in opt.param_groups:
            g["lr"] = lr
        groups = torch.tensor(present)[torch.randint(0, len(present), (s.batch,), generator=gen)]  # [B]
        idx = torch.stack([members[int(c)][torch.randint(0, members[int(c)].numel(), (1,), generator=gen)][0]
                           for c in groups])  # [B]
        x = images[idx].float() / 255  # [B, 3, S, S]
        loss = F.cross_entropy(clf(x), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and ((step + 1) % log_every == 0 or step + 1 == s.steps):
            log.info("classifier step %d/%d loss %.4f (%.1f s)", step + 1, s.steps, float(loss.detach()),
                     time.perf_counter() - t0)
    clf.eval()
    return clf


def save_classifier(clf: GroupClassifier, path: str | Path, class_names: list[str], settings: ClassifierSettings,
                    metrics: dict) -> None:
    from safetensors.torch import save_file

    meta = {"format": FORMAT, "class_names": json.dumps(class_names), "width": str(clf.width),
            "settings": json.dumps(asdict(settings)), "heldout": json.dumps(metrics)}
    with atomic_path(path, ".safetensors") as tmp:
        save_file({k: v.contiguous() for k, v in clf.state_dict().items()}, tmp, metadata=meta)


def load_classifier(path: str | Path) -> tuple[GroupClassifier, dict]:
    """-> (classifier in eval mode, metadata with ``class_names``, ``settings``, ``heldout`` decoded)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), "pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not an emoji group classifier (format {meta.get('format')!r}, expected "
                         f"{FORMAT!r}); train one with python -m training.emoji_classifier")
    info = {"class_names": json.loads(meta["class_names"]), "settings": json.loads(meta["settings"]),
            "heldout": json.loads(meta["heldout"])}
    clf = GroupClassifier(len(info["class_names"]), int(meta["width"]))
    clf.load_state_dict(load_file(str(path)))
    clf.eval()
    return clf, info


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m training.emoji_classifier", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="training split (group sub-folders), e.g. <emoji>/train")
    p.add_argument("--heldout", required=True, help="held-out split, e.g. <emoji>/heldout")
    p.add_argument("--out", required=True, help="classifier file to write (.safetensors)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    p.add_argument("--threads", type=int, default=1, help="torch threads (fixed for reproducible weights)")
    for f in ClassifierSettings.__dataclass_fields__.values():
        p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out = Path(a.out)
    if out.exists() and not a.overwrite:
        raise SystemExit(f"{out} exists; pass --overwrite to replace it")
    torch.set_num_threads(a.threads)
    settings = ClassifierSettings(**{k: getattr(a, k) for k in ClassifierSettings.__dataclass_fields__})
    images, labels, names = load_split(a.data, a.image_size)
    h_images, h_labels, h_names = load_split(a.heldout, a.image_size)
    if h_names != names:
        raise SystemExit(f"the held-out groups {h_names} differ from the training groups {names}")
    clf = train(images, labels, len(names), settings)
    metrics = accuracy(clf, h_images, h_labels)
    metrics["per_group"] = {names[c]: v for c, v in metrics["per_group"].items()}
    metrics["train_accuracy"] = accuracy(clf, images, labels)["accuracy"]
    save_classifier(clf, out, names, settings, metrics)
    print(json.dumps({"out": str(out), "heldout": metrics}, indent=1))  # noqa: T201 (CLI summary)
    return metrics


if __name__ == "__main__":
    main()
