"""The emoji models' yardsticks: the group classifier (training.emoji_classifier) and the sample metrics
(training.emoji_eval). Toy sizes: solid-colour pictures stand in for emoji."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from PIL import Image

from training.emoji_classifier import (
    ClassifierSettings,
    GroupClassifier,
    accuracy,
    load_classifier,
    save_classifier,
    train,
)
from training.emoji_eval import caption_retrieval, group_sample_share, read_catalogue

COLOURS = [(220, 30, 30), (30, 200, 40), (40, 60, 220)]  # one per toy group


def _solid(colour, n: int, size: int = 16, noise: float = 0.0, seed: int = 0) -> torch.Tensor:
    """n pictures of one colour (uint8 [n, 3, size, size]), optionally with pixel noise."""
    x = torch.tensor(colour, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, size, size).clone()
    if noise:
        x += noise * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return x.clamp(0, 255).round().to(torch.uint8)


def _toy_split(per_group=(12, 3, 3)) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.cat([_solid(c, n, noise=20, seed=i) for i, (c, n) in enumerate(zip(COLOURS, per_group))])
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate(per_group)])
    return images, labels


SETTINGS = ClassifierSettings(width=8, steps=60, batch=16, lr=1e-2, warmup=5, seed=3)


def test_classifier_learns_balanced_groups_deterministically_and_round_trips(tmp_path):
    images, labels = _toy_split()
    with torch.random.fork_rng():
        torch.manual_seed(123)  # the global RNG must not matter
        a = train(images, labels, 3, SETTINGS, log_every=0)
    b = train(images, labels, 3, SETTINGS, log_every=0)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    test_images, test_labels = _toy_split((4, 4, 4))
    metrics = accuracy(a, test_images, test_labels)
    assert metrics["balanced_accuracy"] == 1.0 and metrics["images"] == 12  # the rare groups are learnt too
    feats = a.features(test_images.float() / 255)
    assert feats.shape == (12, 32) and torch.allclose(feats.norm(dim=1), torch.ones(12), atol=1e-5)
    path = tmp_path / "clf.safetensors"
    save_classifier(a, path, ["r", "g", "b"], SETTINGS, metrics)
    loaded, info = load_classifier(path)
    assert info["class_names"] == ["r", "g", "b"] and info["heldout"]["balanced_accuracy"] == 1.0
    assert info["settings"]["steps"] == SETTINGS.steps
    assert torch.equal(loaded.predict(test_images.float() / 255), a.predict(test_images.float() / 255))


def test_load_classifier_refuses_another_file(tmp_path):
    from safetensors.torch import save_file

    other = tmp_path / "model.safetensors"
    save_file({"w": torch.zeros(2)}, str(other), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="not an emoji group classifier"):
        load_classifier(other)


class _ColourModel:
    """Stands in for a class / text model: its sample for a condition is that condition's solid colour
    (class models) or the picture of the captioned emoji (text models). Only what emoji_eval calls."""

    def __init__(self, names=None, pictures=None, wrong: bool = False):
        self.config = SimpleNamespace(conditioning=SimpleNamespace(class_names=names), grid=(4, 4),
                                      vqgan=SimpleNamespace(factor=4))
        self.pictures, self.wrong = pictures, wrong

    def class_condition(self, labels):
        return SimpleNamespace(select=lambda idx: [labels[i] for i in idx])

    def text_condition(self, captions):
        return SimpleNamespace(select=lambda idx: [captions[i] for i in idx])

    def sample(self, n, cond, seed, guidance, top_k=None):
        assert len(cond) == n and len(seed) == n
        self.asked = {"guidance": guidance, "top_k": top_k}  # the sampling settings the evaluation passed on
        return cond

    def decode(self, rows):
        if self.pictures is not None:  # text: the captioned emoji's picture (or always the first one)
            return torch.stack([self.pictures[next(iter(self.pictures)) if self.wrong else c] for c in rows])
        colours = [COLOURS[(c + 1) % 3] if self.wrong else COLOURS[c] for c in rows]
        return torch.cat([_solid(c, 1).float() / 255 for c in colours])


def test_group_sample_share_counts_the_asked_group():
    images, labels = _toy_split()
    clf = train(images, labels, 3, SETTINGS, log_every=0)
    model = _ColourModel(["r", "g", "b"])
    right = group_sample_share(model, clf, per_group=2, guidance=2.0, seed=0, top_k=5)
    assert right["share"] == 1.0 and right["per_group"] == {"r": 1.0, "g": 1.0, "b": 1.0}
    assert right["chance"] == round(1 / 3, 4) and (right["guidance"], right["top_k"]) == (2.0, 5)
    assert model.asked == {"guidance": 2.0, "top_k": 5}
    wrong = group_sample_share(_ColourModel(["r", "g", "b"], wrong=True), clf, per_group=2)
    assert wrong["share"] == 0.0 and wrong["most_assigned"] == {"r": "g", "g": "b", "b": "r"}
    with pytest.raises(ValueError, match="groups"):
        group_sample_share(_ColourModel(["r", "g"]), clf)


def _toy_emoji_root(tmp_path, n: int = 12):
    """An emoji folder as training.make_emoji writes it: n training emoji of distinct colours (2 pictures
    each, the second slightly lighter) and one held-out emoji."""
    root = tmp_path / "emoji"
    lines = []
    for i in range(n + 1):
        split = "train" if i < n else "heldout"
        colour = (20 * i % 256, 255 - 17 * i % 256, 90 * i % 256)
        files = []
        for v in range(2 if split == "train" else 1):
            rel = f"{split}/g/{i:03d}_{v}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), tuple(min(255, c + 6 * v) for c in colour)).save(root / rel)
            (root / rel).with_suffix(".txt").write_text(f"emoji number {i}\n")
            files.append(rel)
        lines.append(json.dumps({"code": f"{i:x}", "name": f"emoji number {i}", "group": "g", "split": split,
                                 "files": files}))
    (root / "emoji.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_caption_retrieval_scores_samples_against_their_own_emoji(tmp_path):
    from training.emoji_eval import _picture

    root = _toy_emoji_root(tmp_path)
    catalogue = read_catalogue(root, "train")
    assert len(catalogue) == 12 and catalogue[3]["caption"] == "emoji number 3"
    assert len(read_catalogue(root, "heldout")) == 1
    pictures = {e["caption"]: _picture(root, e["files"][0], 16) for e in catalogue}
    torch.manual_seed(0)
    clf = GroupClassifier(3, width=8)  # untrained: its features still tell solid colours apart
    model = _ColourModel(pictures=pictures)
    right = caption_retrieval(model, clf, root, n=8, distractors=3, seed=1, guidance=3.0, top_k=4)
    assert right["share"] == 1.0 and right["captions"] == 8 and right["chance"] == 0.25
    assert model.asked == {"guidance": 3.0, "top_k": 4} and (right["guidance"], right["top_k"]) == (3.0, 4)
    assert right["real_augmented_picture_share"] is not None and len(right["examples"]) == 8
    again = caption_retrieval(_ColourModel(pictures=pictures), clf, root, n=8, distractors=3, seed=1, guidance=3.0,
                              top_k=4)
    assert again == right  # seeded: the same emoji, distractors and figures
    wrong = caption_retrieval(_ColourModel(pictures=pictures, wrong=True), clf, root, n=8, distractors=3, seed=1)
    assert wrong["share"] < 0.5  # always the same picture: mostly nearer to some other emoji
    with pytest.raises(ValueError, match="at least 13 emoji"):
        caption_retrieval(_ColourModel(pictures=pictures), clf, root, n=4, distractors=12)


def test_group_sample_share_runs_a_real_class_model():
    """The metric on a real (tiny, random-weight) class model: seeded, one figure per group."""
    from imagebart_core import build_model
    from imagebart_core.config import tiny_config

    cfg = tiny_config(n_scales=2, vocab_size=16, n_embed=20, grid=(4, 4), conditioning="class", num_classes=3)
    cfg.conditioning.class_names = ["r", "g", "b"]
    model = build_model(cfg, seed=0)
    images, labels = _toy_split()
    clf = train(images, labels, 3, SETTINGS, log_every=0)
    a = group_sample_share(model, clf, per_group=2, guidance=2.0, seed=5)
    b = group_sample_share(model, clf, per_group=2, guidance=2.0, seed=5)
    assert a == b and set(a["per_group"]) == {"r", "g", "b"} and 0.0 <= a["share"] <= 1.0


def test_compare_models_tells_equal_files_from_changed_ones(tmp_path):
    from safetensors.torch import save_file

    from training.compare_models import compare_files, main

    a, b, c = tmp_path / "a.safetensors", tmp_path / "b.safetensors", tmp_path / "c.safetensors"
    w = {"x": torch.arange(6, dtype=torch.float16).view(2, 3), "y": torch.ones(2)}
    save_file(w, str(a), metadata={"config": "{}"})
    save_file(dict(w), str(b), metadata={"config": "{}"})
    save_file({**w, "x": w["x"] + 0.5}, str(c), metadata={"config": "{\"n\": 1}"})
    same = compare_files(a, b)
    assert same["same"] and same["bytes_equal"] and same["tensors"] == 2
    changed = compare_files(a, c)
    assert not changed["same"] and changed["different"] == {"x": 0.5} and not changed["metadata_equal"]
    assert main([str(a), str(b)]) == 0 and main([str(a), str(c)]) == 1
