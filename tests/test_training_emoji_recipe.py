"""The emoji recipe runs end to end at toy sizes (slow: about a dozen training processes)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from training.emoji_catalog import EMOJI_TEST_PATH
from training.make_emoji import FONT_PATH


@pytest.mark.slow
@pytest.mark.skipif(not FONT_PATH.is_file() or not EMOJI_TEST_PATH.is_file(),
                    reason="needs fonts-noto-color-emoji and unicode-data (apt-get install ...)")
def test_smoke_recipe_writes_two_loadable_models_and_its_record(tmp_path):
    import imagebart_core as ib
    from training.emoji_recipe import CLASS_MODEL, SMOKE, TEXT_MODEL, EmojiRecipeSettings, main

    models = tmp_path / "models"
    main(["--work", str(tmp_path / "work"), "--models", str(models), "--smoke"])
    record = json.loads((models / "emoji_recipe.json").read_text())
    expected = dataclasses.replace(EmojiRecipeSettings(), **SMOKE)
    settings = dict(record["settings"])
    from training.optim import cpu_bf16_supported

    used = "bf16" if cpu_bf16_supported() else "fp32"
    assert settings.pop("precision_used") == {"vqgan": used, "scales": used}
    assert settings == json.loads(json.dumps(dataclasses.asdict(expected)))
    # group-balanced training pictures: SMOKE's group_images over each group's training emoji
    assert record["data"]["training_variants"] == {
        g: max(1, round(SMOKE["group_images"] / n)) if n else 1 for g, n in record["data"]["groups"]["train"].items()}
    assert set(record["step_seconds"]) == {"data", "vqgan+classifier", "shrink", "configs", "codes", "scales",
                                           "assemble", "evaluate"}
    assert set(record["seconds_per_training_step"]) == {"vqgan+classifier", "scales"}
    assert record["data"]["emoji"]["heldout"] > 0 and record["data"]["sources"]["font_package"]
    metrics = json.loads((models / "emoji_metrics.json").read_text())
    assert metrics["vqgan"]["psnr_db"] > 0 and metrics["vqgan"]["full_codebook"]["codes_used"] >= 1
    class_model, text_model = ib.load_model(models / CLASS_MODEL), ib.load_model(models / TEXT_MODEL)
    assert class_model.config.vqgan.n_embed == SMOKE["vq_n_embed"]
    assert sorted(class_model.config.conditioning.class_names)[0] == "activities"
    for kind, model in (("class", class_model), ("text", text_model)):
        assert set(metrics[kind]["scales"]) == {"1", "2"}
    assert 0 <= metrics["classifier"]["heldout"]["balanced_accuracy"] <= 1
    share = metrics["class"]["samples_in_asked_group"]
    assert set(share["per_group"]) == set(class_model.config.conditioning.class_names)
    assert share["samples_per_group"] == SMOKE["eval_per_group"]
    assert (share["guidance"], share["top_k"]) == (expected.class_guidance, None)
    retrieval = metrics["text"]["samples_nearest_own_emoji"]
    assert retrieval["captions"] == SMOKE["eval_captions"] and retrieval["distractors"] == SMOKE["eval_distractors"]
    assert (retrieval["guidance"], retrieval["top_k"]) == (expected.text_guidance, expected.text_top_k)
    # each scale of each model trained for its own step count (SMOKE gives the four different ones)
    for kind in ("class", "text"):
        for scale, steps in enumerate(SMOKE[f"{kind}_scale_steps"], start=1):
            log = (tmp_path / "work" / kind / f"scale{scale}" / "log.jsonl").read_text().splitlines()
            assert json.loads(log[-1])["step"] == steps, (kind, scale)
    # the evaluation alone, on the files already there, trains nothing and measures the same
    models_before = {p.name: p.stat().st_mtime_ns for p in models.glob("*.safetensors")}
    again = main(["--work", str(tmp_path / "work"), "--models", str(models), "--smoke", "--evaluate-only"])
    assert set(again["step_seconds"]) == {"evaluate"}
    assert {p.name: p.stat().st_mtime_ns for p in models.glob("*.safetensors")} == models_before
    remeasured = json.loads((models / "emoji_metrics.json").read_text())
    for m in (remeasured, metrics):
        for kind in ("class", "text"):
            m[kind].pop("sample_4_images_s")  # a wall time
    assert remeasured == metrics
    cond = text_model.text_condition(["grinning face"])
    images = text_model.decode(text_model.sample(1, cond=cond, seed=0))
    assert tuple(images.shape) == (1, 3, 64, 64) and torch.isfinite(images).all()


def test_a_step_list_that_does_not_fit_the_scales_is_refused_before_any_work(tmp_path):
    from training.emoji_recipe import EmojiRecipe, EmojiRecipeSettings

    for bad in ((1000,), (1000, 0), (1000, 2000, 3000)):
        settings = dataclasses.replace(EmojiRecipeSettings(), text_scale_steps=bad)
        with pytest.raises(SystemExit, match="text_scale_steps must give n_scales = 2 positive step counts"):
            EmojiRecipe(tmp_path / "work", tmp_path / "models", settings, False, 2).run()
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
@pytest.mark.skipif(not FONT_PATH.is_file() or not EMOJI_TEST_PATH.is_file(),
                    reason="needs fonts-noto-color-emoji and unicode-data (apt-get install ...)")
def test_the_smoke_recipe_run_twice_gives_the_same_tensors(tmp_path, monkeypatch):
    """Every job is seeded and single-threaded, in bf16 too where the CPU has it: two runs give the same files."""
    from training.compare_models import compare_files
    from training.emoji_recipe import CLASS_MODEL, TEXT_MODEL, main

    monkeypatch.delenv("PYTHONPATH", raising=False)  # the recipe's jobs find the package from any folder
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        monkeypatch.chdir(tmp_path / run)  # relative paths, as the bundled run records them
        main(["--work", "runs/emoji", "--models", "runs/emoji/models", "--smoke"])
    for name in (CLASS_MODEL, TEXT_MODEL):
        report = compare_files(tmp_path / "a" / "runs/emoji/models" / name, tmp_path / "b" / "runs/emoji/models" / name)
        assert report["same"], report


def test_evaluate_only_brings_the_records_evaluation_settings_up_to_date(tmp_path):
    """--evaluate-only with other sampling settings updates them in emoji_recipe.json and lists the change; with
    the same settings it changes nothing; with other training settings it refuses (the files are not the
    recipe's) and leaves the record as it was."""
    from training.emoji_recipe import EmojiRecipeSettings, check_training_settings, record_evaluation

    run = EmojiRecipeSettings()
    record_path = tmp_path / "emoji_recipe.json"
    text = json.dumps({"settings": json.loads(json.dumps(dataclasses.asdict(run))), "total_seconds": 1.0}, indent=2)
    record_path.write_text(text)
    assert record_evaluation(record_path, run, 3.0) is None and record_path.read_text() == text
    assert record_evaluation(tmp_path / "absent.json", run, 3.0) is None

    resampled = dataclasses.replace(run, class_guidance=run.class_guidance + 1, eval_captions=7)
    record = record_evaluation(record_path, resampled, 3.0)
    assert record == json.loads(record_path.read_text())
    assert record["settings"] == json.loads(json.dumps(dataclasses.asdict(resampled)))
    assert record["total_seconds"] == 1.0
    (rerun,) = record["evaluation_reruns"]
    assert rerun["changed"] == {"class_guidance": [run.class_guidance, run.class_guidance + 1],
                                "eval_captions": [run.eval_captions, 7]}
    assert rerun["evaluate_seconds"] == 3.0

    before = record_path.read_text()
    retrained = dataclasses.replace(resampled, text_scale_steps=(5, 5), vq_lr=1.0)
    with pytest.raises(SystemExit, match="other training settings .*vq_lr, text_scale_steps"):
        check_training_settings(record_path, retrained)
    with pytest.raises(SystemExit, match="not this recipe's"):
        record_evaluation(record_path, retrained, 3.0)
    assert record_path.read_text() == before
