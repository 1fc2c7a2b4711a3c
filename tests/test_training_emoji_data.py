"""The colour-emoji data step (training.make_emoji, training.emoji_catalog)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import ImageFolder
from training.emoji_catalog import EMOJI_TEST_PATH, GROUPS, Emoji, EmojiSourceMissing, is_heldout, read_emoji_test
from training.make_emoji import FONT_PATH, EmojiFontMissing, EmojiSettings, main, write_emoji

needs_font = pytest.mark.skipif(
    not FONT_PATH.is_file() or not EMOJI_TEST_PATH.is_file(),
    reason=f"needs {FONT_PATH} (apt-get install fonts-noto-color-emoji) and {EMOJI_TEST_PATH} "
    "(apt-get install unicode-data)",
)

EXCERPT = """\
# emoji-test.txt
# Version: 15.0

# group: Smileys & Emotion

# subgroup: face-smiling
1F600                                                  ; fully-qualified     # \U0001F600 E1.0 grinning face
263A FE0F                                              ; fully-qualified     # \u263a\ufe0f E0.6 smiling face
263A                                                   ; unqualified         # \u263a E0.6 smiling face

# group: People & Body

# subgroup: hand-fingers-closed
1F44D                                                  ; fully-qualified     # \U0001F44D E0.6 thumbs up
1F44D 1F3FD                                            ; fully-qualified     # \U0001F44D\U0001F3FD E1.0 thumbs up: medium skin tone

# group: Component

# subgroup: skin-tone
1F3FB                                                  ; component           # \U0001F3FB E1.0 light skin tone

# group: Flags

# subgroup: country-flag
1F1EB 1F1F7                                            ; fully-qualified     # \U0001F1EB\U0001F1F7 E2.0 flag: France
"""


def _excerpt(tmp_path: Path) -> Path:
    path = tmp_path / "emoji-test.txt"
    path.write_text(EXCERPT, encoding="utf-8")
    return path


def test_catalog_reads_fully_qualified_emoji_of_the_nine_groups(tmp_path):
    items = read_emoji_test(_excerpt(tmp_path))
    assert [e.name for e in items] == ["grinning face", "smiling face", "thumbs up",
                                       "thumbs up: medium skin tone", "flag: France"]
    assert [e.group for e in items] == ["smileys-emotion", "smileys-emotion", "people-body", "people-body", "flags"]
    assert items[3].codepoints == (0x1F44D, 0x1F3FD) and items[3].text == "\U0001F44D\U0001F3FD"
    assert items[3].code == "1f44d-1f3fd" and items[3].family == "1f44d" == items[2].family
    assert items[1].subgroup == "face-smiling" and items[0].version == "E1.0"


def test_catalog_missing_file_names_the_package(tmp_path):
    with pytest.raises(EmojiSourceMissing, match="unicode-data"):
        read_emoji_test(tmp_path / "nope.txt")


def test_split_is_a_fixed_function_of_the_family():
    bases = [Emoji((0x1F000 + i,), f"e{i}", "symbols", "x", "E1.0") for i in range(3000)]
    held = [is_heldout(e) for e in bases]
    assert held == [is_heldout(e) for e in bases]  # no hidden state
    assert 0.08 < sum(held) / len(held) < 0.12  # the default 10 %
    assert sum(is_heldout(e, 0.3) for e in bases) > sum(held)
    # every skin tone of an emoji is on the side of its base emoji
    for e in bases[:200]:
        for tone in range(0x1F3FB, 0x1F400):
            toned = Emoji(e.codepoints + (tone,), e.name + ": tone", e.group, e.subgroup, e.version)
            assert is_heldout(toned) == is_heldout(e)
    with pytest.raises(ValueError, match="heldout_fraction"):
        is_heldout(bases[0], 1.0)


def test_missing_font_stops_with_the_package_name_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "emoji"
    with pytest.raises(EmojiFontMissing, match="fonts-noto-color-emoji"):
        write_emoji(out, font_path=tmp_path / "NotoColorEmoji.ttf", emoji_test=_excerpt(tmp_path))
    assert not out.exists()
    with pytest.raises(SystemExit, match="apt-get install fonts-noto-color-emoji"):
        main(["--out", str(out), "--font", str(tmp_path / "missing.ttf")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emoji-test.txt"]


@needs_font
def test_renders_emoji_with_captions_groups_and_split(tmp_path):
    s = EmojiSettings(variants=2, heldout_variants=1, per_group=6, heldout_fraction=0.3)
    summary = write_emoji(tmp_path / "emoji", s)
    root = tmp_path / "emoji"
    manifest = [json.loads(line) for line in (root / "emoji.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(manifest) == 54 and summary["missing_from_font"] == []
    assert sorted({m["group"] for m in manifest}) == sorted(GROUPS.values())
    assert any(":" in m["name"] and "skin tone" in m["name"] for m in manifest)  # a skin-tone sequence
    assert any("200d" in m["code"].split("-") for m in manifest)  # a ZWJ sequence (rainbow flag)
    catalog = {e.code: e for e in read_emoji_test()}
    for m in manifest:
        item = catalog[m["code"]]
        assert m["split"] == ("heldout" if is_heldout(item, 0.3) else "train")
        assert len(m["files"]) == (1 if m["split"] == "heldout" else 2)
        for f in m["files"]:
            path = root / f
            assert path.parts[-3:-1] == (m["split"], item.group)
            with Image.open(path) as im:
                assert im.mode == "RGB" and im.size == (64, 64)
                arr = np.asarray(im)
            assert arr.std() > 10  # an emoji was drawn, not a blank picture
            assert path.with_suffix(".txt").read_text(encoding="utf-8").strip() == item.name
    assert summary["emoji"]["train"] + summary["emoji"]["heldout"] == 54
    assert summary["emoji"]["heldout"] > 0
    # variant 0 is canonical (white corners), variant 1 augmented but the same emoji
    first = next(m for m in manifest if m["split"] == "train")
    canon, aug = (np.asarray(Image.open(root / f)).astype(int) for f in first["files"])
    assert (canon[0, 0] == 255).all() and (canon[-1, -1] == 255).all()
    assert np.abs(canon - aug).mean() > 0
    # both splits read as image folders with the same nine classes and the captions
    train, held = ImageFolder(root / "train", 64), ImageFolder(root / "heldout", 64)
    assert train.class_names == held.class_names == sorted(GROUPS.values())
    assert train.has_labels() and train[0]["caption"] != ""
    assert tuple(train[0]["image"].shape) == (3, 64, 64)


@needs_font
def test_same_settings_give_the_same_pictures_and_overwrite_is_explicit(tmp_path):
    s = EmojiSettings(variants=3, per_group=1)
    write_emoji(tmp_path / "a", s)
    write_emoji(tmp_path / "b", s)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) >= 9
    for f in files:
        assert np.array_equal(np.asarray(Image.open(tmp_path / "a" / f)), np.asarray(Image.open(tmp_path / "b" / f)))
    with pytest.raises(FileExistsError, match="--overwrite"):
        write_emoji(tmp_path / "a", s)
    write_emoji(tmp_path / "a", EmojiSettings(variants=1, per_group=1), overwrite=True)
    assert len(list((tmp_path / "a").rglob("*.png"))) == 9
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no partial or old folders left


def test_group_balancing_gives_rarer_groups_more_variants():
    from training.make_emoji import training_variants

    people = [Emoji((0x1F44D, 0x1F3FB + i), f"thumbs up {i}", "people-body", "hand", "E1.0") for i in range(5)]
    people += [Emoji((0x1F590 + i,), f"hand {i}", "people-body", "hand", "E1.0") for i in range(25)]
    smileys = [Emoji((0x1F600 + i,), f"face {i}", "smileys-emotion", "face", "E1.0") for i in range(3)]
    catalog = people + smileys
    assert training_variants(catalog, EmojiSettings(variants=4)) == {g: 4 for g in GROUPS.values()}
    s = EmojiSettings(group_images=12, heldout_fraction=0.0)
    v = training_variants(catalog, s)
    assert v["people-body"] == 1 and v["smileys-emotion"] == 4  # 30 emoji x 1 picture; 3 emoji x 4 pictures
    assert v["flags"] == 1  # a group without emoji
    s = EmojiSettings(group_images=12, heldout_fraction=0.5)  # only the training split's emoji count
    n_train = sum(not is_heldout(e, 0.5) for e in smileys)
    assert training_variants(catalog, s)["smileys-emotion"] == max(1, round(12 / n_train))
    with pytest.raises(ValueError, match="group_images"):
        EmojiSettings(group_images=0).check()


@needs_font
def test_balanced_data_set_has_about_the_same_pictures_per_group(tmp_path):
    s = EmojiSettings(per_group=3, heldout_fraction=0.0, group_images=6)
    summary = write_emoji(tmp_path / "emoji", s)
    per_group = {g: len(list((tmp_path / "emoji" / "train" / g).glob("*.png"))) for g in GROUPS.values()}
    assert all(n == 6 for n in per_group.values()), per_group  # 3 emoji x 2 pictures in every group
    assert summary["training_variants"] == {g: 2 for g in GROUPS.values()}
