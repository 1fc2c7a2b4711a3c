"""Conditioning: class-name resolution, CLIP text tokens, null conditions, batching helpers."""

import pytest
import torch

from imagebart_core.conditioning import (
    NULL_LABEL,
    ClassTable,
    Condition,
    class_condition,
    imagenet_class_names,
    null_condition,
    text_condition,
)
from imagebart_core.config import ConditioningConfig

SOT, EOT = 49406, 49407


def imagenet_cfg(**kw) -> ConditioningConfig:
    return ConditioningConfig(kind="class", num_classes=1000, **kw)


def text_cfg(**kw) -> ConditioningConfig:
    return ConditioningConfig(kind="text", **kw)


# -- class names -------------------------------------------------------------------------------


def test_imagenet_names_standard_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[0] == "tench"
    assert names[207] == "golden retriever"
    assert names[292] == "tiger"
    assert ClassTable(imagenet_cfg()).names == names


def test_default_and_custom_names():
    assert ClassTable(ConditioningConfig(kind="class", num_classes=3)).names == ("class_0", "class_1", "class_2")
    table = ClassTable(ConditioningConfig(kind="class", num_classes=2, class_names=["cat", "dog"]))
    assert len(table) == 2
    assert table.resolve("Dog") == 1
    with pytest.raises(ValueError, match="no classes"):
        ClassTable(ConditioningConfig(kind="none"))


def test_resolve_indices():
    table = ClassTable(imagenet_cfg())
    assert table.resolve(207) == 207
    assert table.resolve(" 292 ") == 292
    assert table.resolve(torch.tensor(5)) == 5
    for bad in (1000, -1, "1000", "-3"):
        with pytest.raises(ValueError, match=r"0\.\.999"):
            table.resolve(bad)
    with pytest.raises(ValueError):
        table.resolve(True)
    with pytest.raises(ValueError):
        table.resolve(2.5)


def test_resolve_names_case_and_prefix():
    table = ClassTable(imagenet_cfg())
    assert table.resolve("golden retriever") == 207
    assert table.resolve("Golden Retriever") == 207
    assert table.resolve("golden_retriever") == 207
    assert table.resolve("tiger") == 292  # exact match wins over "tiger shark", "tiger cat", ...
    assert table.resolve("TIGER") == 292
    assert table.resolve("golden retr") == 207  # unique prefix


def test_resolve_synonym_parts():
    names = ["tiger, Panthera tigris", "tiger shark, Galeocerdo cuvieri", "tench, Tinca tinca"]
    table = ClassTable(ConditioningConfig(kind="class", num_classes=3, class_names=names))
    assert table.resolve("tiger") == 0
    assert table.resolve("panthera tigris") == 0
    assert table.resolve("Galeocerdo") == 1  # unique prefix of a synonym part
    assert table.resolve("tiger, Panthera tigris") == 0


def test_resolve_ambiguous_and_unknown():
    table = ClassTable(imagenet_cfg())
    # ImageNet has "Cardigan" (264, the corgi) and "cardigan" (474, the sweater)
    assert table.resolve("Cardigan") == 264
    assert table.resolve("cardigan") == 474
    with pytest.raises(ValueError, match="ambiguous") as err:
        table.resolve("CARDIGAN")
    assert "264" in str(err.value) and "474" in str(err.value)
    assert table.resolve("tiger ") == 292
    with pytest.raises(ValueError, match="ambiguous") as err:
        table.resolve("tig")  # prefix of "tiger shark", "tiger cat", "tiger beetle" (and "tiger")
    assert "tiger" in str(err.value)
    with pytest.raises(ValueError, match="unknown class") as err:
        table.resolve("golden retreiver")
    assert "golden retriever" in str(err.value)
    with pytest.raises(ValueError, match="unknown class"):
        table.resolve("qqqqqqqq")
    with pytest.raises(ValueError, match="empty"):
        table.resolve("  ")


def test_class_condition():
    cond = class_condition(imagenet_cfg(), ["tiger", 207, "0"])
    assert cond.kind == "class"
    assert cond.tokens.dtype == torch.int64 and cond.tokens.shape == (3, 1)
    assert cond.tokens[:, 0].tolist() == [292, 207, 0]
    assert cond.labels == ["tiger", "golden retriever", "tench"]
    assert cond.null.dtype == torch.bool and not cond.null.any()
    assert cond.batch_size() == 3
    with pytest.raises(ValueError, match="unconditional"):
        class_condition(ConditioningConfig(), [0])
    with pytest.raises(ValueError, match="text-conditional"):
        class_condition(text_cfg(), [0])
    with pytest.raises(ValueError):
        class_condition(imagenet_cfg(), [])


# -- text --------------------------------------------------------------------------------------


def test_text_tokens_shape_and_special_ids():
    cond = text_condition(text_cfg(), ["a photo of a tiger", "a red car on a hill"])
    assert cond.kind == "text"
    assert cond.tokens.dtype == torch.int64 and cond.tokens.shape == (2, 77)
    assert (cond.tokens[:, 0] == SOT).all()
    for row in cond.tokens:
        assert EOT in row.tolist()
    assert cond.labels == ["a photo of a tiger", "a red car on a hill"]
    assert not cond.null.any()
    assert text_condition(text_cfg(), "one prompt").tokens.shape == (1, 77)


def test_text_truncation_keeps_eot_last():
    cond = text_condition(text_cfg(text_length=8), ["word " * 100])
    assert cond.tokens.shape == (1, 8)
    assert cond.tokens[0, 0] == SOT and cond.tokens[0, -1] == EOT
    assert (cond.tokens[0] != 0).all()


def test_text_is_deterministic_and_case_insensitive():
    a = text_condition(text_cfg(), ["A Tiger"]).tokens
    b = text_condition(text_cfg(), ["a tiger"]).tokens
    assert torch.equal(a, b)


def test_empty_prompt():
    with pytest.raises(ValueError, match="empty prompt"):
        text_condition(text_cfg(), ["fine", "   "])
    cond = text_condition(text_cfg(), ["fine", ""], allow_empty=True)
    assert cond.null.tolist() == [False, True]
    assert cond.labels[1] == NULL_LABEL
    assert cond.tokens[1, :2].tolist() == [SOT, EOT] and not cond.tokens[1, 2:].any()
    with pytest.raises(ValueError, match="class-conditional"):
        text_condition(imagenet_cfg(), ["x"])


# -- null conditions ---------------------------------------------------------------------------


def test_null_class_condition():
    cfg = ConditioningConfig(kind="class", num_classes=4, null_condition=True)
    cond = null_condition(cfg, 3)
    assert cond.tokens.shape == (3, 1) and (cond.tokens == 4).all()
    assert cond.null.all() and cond.labels == [NULL_LABEL] * 3
    with pytest.raises(ValueError, match="condition dropout"):
        null_condition(ConditioningConfig(kind="class", num_classes=4), 1)
    with pytest.raises(ValueError, match="condition dropout"):
        null_condition(
            ConditioningConfig(kind="class", num_classes=4, null_condition=True, shared_class_embedding=True)
        )
    with pytest.raises(ValueError, match="unconditional"):
        null_condition(ConditioningConfig(), 1)


def test_null_text_condition():
    cond = null_condition(text_cfg(null_condition=True), 2)
    assert cond.tokens.shape == (2, 77) and cond.null.all()
    assert torch.equal(cond.tokens, text_condition(text_cfg(), ["", ""], allow_empty=True).tokens)
    assert cond.tokens[0, :2].tolist() == [SOT, EOT]


# -- batching helpers --------------------------------------------------------------------------


def test_repeat_to_and_select():
    one = class_condition(imagenet_cfg(), ["tiger"])
    four = one.repeat_to(4)
    assert four.batch_size() == 4 and four.tokens.shape == (4, 1)
    assert four.labels == ["tiger"] * 4 and four.null.shape == (4,)
    four.tokens[0, 0] = 1  # a real copy, not a view of the single row
    assert one.tokens[0, 0] == 292
    three = class_condition(imagenet_cfg(), [1, 2, 3])
    assert three.repeat_to(3) is three
    with pytest.raises(ValueError, match="3 rows"):
        three.repeat_to(2)
    picked = three.select([2, 0, 0])
    assert picked.tokens[:, 0].tolist() == [3, 1, 1]
    assert picked.labels == [three.labels[2], three.labels[0], three.labels[0]]
    assert three.select(torch.tensor([-1])).tokens[0, 0] == 3
    with pytest.raises(ValueError, match="out of range"):
        three.select([3])


def test_condition_validates_fields():
    with pytest.raises(ValueError, match="int64"):
        Condition("class", torch.zeros(2, 1, dtype=torch.int32), ["a", "b"], torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="labels"):
        Condition("class", torch.zeros(2, 1, dtype=torch.int64), ["a"], torch.zeros(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="kind"):
        Condition("image", torch.zeros(2, 1, dtype=torch.int64), ["a", "b"], torch.zeros(2, dtype=torch.bool))


def test_compact_text_vocabulary_remaps_known_ids_and_drops_unknown_ones(caplog):
    from imagebart_core.conditioning import clip_tokenizer

    full = ConditioningConfig(kind="text", text_length=12)
    seen = text_condition(full, ["a red circle"]).tokens[0]
    ids = sorted({int(t) for t in seen if int(t) != 0})
    compact = ConditioningConfig(kind="text", text_length=12, text_token_ids=ids, text_vocab_size=len(ids) + 1)
    tokens = text_condition(compact, ["a red circle"]).tokens[0]
    expected = [ids.index(int(t)) + 1 if int(t) != 0 else 0 for t in seen]
    assert tokens.tolist() == expected and int(tokens.max()) <= len(ids)
    with caplog.at_level("WARNING"):
        other = text_condition(compact, ["a purple circle"]).tokens[0]
    purple = int(clip_tokenizer()(["purple"], context_length=4)[0, 1])
    assert purple not in ids and int((other == 0).sum()) == int((tokens == 0).sum()) + 1
    assert "outside this model's text vocabulary" in caplog.text
