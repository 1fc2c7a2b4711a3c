"""What the emoji models' samples show, measured with the recipe's group classifier (issue 15, "Must show 1").

* :func:`group_sample_share`: the group (class) model samples ``per_group`` pictures for each group at a given
  guidance; the share that the classifier assigns to the asked group (overall and per group), next to the
  share for the classifier on real held-out pictures (its own accuracy) and chance (1 / groups).
* :func:`caption_retrieval`: the text model samples one picture for each of ``n`` held-in captions (training
  emoji, drawn with a seeded generator); a hit is a sample nearer (cosine distance of the classifier's
  l2-normalised features) to its own emoji's canonical picture than to each of ``distractors`` other random
  emoji's. Reported next to chance (1 / (distractors + 1)) and to the same measure for a real augmented picture
  of the emoji in place of the sample (what a perfect sampler would score in this feature space).

Everything is seeded: the emoji drawn, the distractors and the samples (per item) depend on ``seed`` only.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import torch

from .data import load_rgb, to_tensor

SAMPLE_BATCH = 32  # sampling batch (keeps the memory of guided sampling small)


def _sample_images(model, cond, n: int, seed: int, guidance: float, top_k: int | None = None) -> torch.Tensor:
    """``n`` samples (condition rows ``cond``; ``top_k`` None = full distribution, else the k most likely codes
    at every scale) decoded -> float ``[n, 3, H, W]`` in 0..1; item i has seed ``seed + i`` whatever the
    batching."""
    out = []
    for start in range(0, n, SAMPLE_BATCH):
        idx = list(range(start, min(n, start + SAMPLE_BATCH)))
        codes = model.sample(len(idx), cond=cond.select(idx), seed=[seed + i for i in idx], guidance=guidance,
                             top_k=top_k)
        out.append(model.decode(codes))
    return torch.cat(out)


@torch.no_grad()
def group_sample_share(model, clf, per_group: int = 16, guidance: float = 2.0, seed: int = 0,
                       top_k: int | None = None) -> dict:
    """Share of the class model's samples that ``clf`` (a training.emoji_classifier.GroupClassifier with the same
    group list) assigns to the asked group."""
    names = list(model.config.conditioning.class_names or [])
    if not names or clf.n_classes != len(names):
        raise ValueError(f"the classifier has {clf.n_classes} groups, the model {len(names)}: they must share the "
                         "group list of the training split")
    labels = [c for c in range(len(names)) for _ in range(per_group)]
    images = _sample_images(model, model.class_condition(labels), len(labels), seed, guidance, top_k)  # [N, 3, H, W]
    pred = clf.predict(images)  # [N]
    hit = (pred == torch.tensor(labels)).float()
    per = {names[c]: round(float(hit[c * per_group:(c + 1) * per_group].mean()), 4) for c in range(len(names))}
    confused = {names[c]: names[int(torch.bincount(pred[c * per_group:(c + 1) * per_group],
                                                    minlength=len(names)).argmax())] for c in range(len(names))}
    return {"share": round(float(hit.mean()), 4), "per_group": per, "most_assigned": confused,
            "samples_per_group": per_group, "guidance": guidance, "top_k": top_k, "seed": seed,
            "chance": round(1 / len(names), 4)}


def read_catalogue(emoji_root: str | Path, split: str = "train") -> list[dict]:
    """The emoji of one split from ``<emoji_root>/emoji.jsonl`` (training.make_emoji), each with ``files``
    (picture 0 first: the canonical one) and ``caption`` (the text beside picture 0)."""
    root = Path(emoji_root)
    out = []
    for line in (root / "emoji.jsonl").read_text(encoding="utf-8").splitlines():
        e = json.loads(line)
        if e["split"] == split and e["files"]:
            e["caption"] = (root / e["files"][0]).with_suffix(".txt").read_text(encoding="utf-8").strip()
            out.append(e)
    if not out:
        raise ValueError(f"{root / 'emoji.jsonl'} lists no emoji of the {split!r} split")
    return out


def _picture(root: Path, rel: str, size: int) -> torch.Tensor:
    return (to_tensor(load_rgb(root / rel).resize((size, size))) + 1) / 2  # [3, S, S] in 0..1


@torch.no_grad()
def caption_retrieval(model, clf, emoji_root: str | Path, n: int = 100, distractors: int = 9,
                      guidance: float = 2.0, seed: int = 0, top_k: int | None = None) -> dict:
    """How often a text-model sample for a held-in caption is nearer to its own emoji than to each of
    ``distractors`` random others (see the module doc)."""
    root = Path(emoji_root)
    emoji = read_catalogue(root, "train")
    if len(emoji) < distractors + 1:
        raise ValueError(f"caption retrieval needs at least {distractors + 1} emoji, found {len(emoji)}")
    rnd = random.Random(f"caption-retrieval-{seed}")
    chosen = rnd.sample(range(len(emoji)), min(n, len(emoji)))
    others = [rnd.sample([j for j in range(len(emoji)) if j != i], distractors) for i in chosen]
    size = model.config.grid[0] * model.config.vqgan.factor
    needed = sorted(set(chosen) | {j for o in others for j in o})
    canon = clf.features(torch.stack([_picture(root, emoji[j]["files"][0], size) for j in needed]))  # [M, F]
    row = {j: r for r, j in enumerate(needed)}
    captions = [emoji[i]["caption"] for i in chosen]
    samples = clf.features(_sample_images(model, model.text_condition(captions), len(chosen), seed, guidance,
                                          top_k))

    def hits(queries: torch.Tensor, valid: list[bool]) -> tuple[int, int]:
        h = total = 0
        for q, i, o, ok in zip(queries, chosen, others, valid):
            if not ok:
                continue
            own = float(q @ canon[row[i]])
            best_other = max(float(q @ canon[row[j]]) for j in o)
            h += own > best_other
            total += 1
        return h, total

    h, total = hits(samples, [True] * len(chosen))
    real_ok = [len(emoji[i]["files"]) > 1 for i in chosen]
    real = clf.features(torch.stack([_picture(root, emoji[i]["files"][1 if ok else 0], size)
                                     for i, ok in zip(chosen, real_ok)]))
    rh, rtotal = hits(real, real_ok)
    return {"share": round(h / total, 4), "captions": total, "distractors": distractors,
            "chance": round(1 / (distractors + 1), 4), "guidance": guidance, "top_k": top_k, "seed": seed,
            "real_augmented_picture_share": round(rh / rtotal, 4) if rtotal else None,
            "examples": [{"caption": c, "hit": bool(float(q @ canon[row[i]]) >
                                                     max(float(q @ canon[row[j]]) for j in o))}
                         for c, q, i, o in list(zip(captions, samples, chosen, others))[:10]]}
