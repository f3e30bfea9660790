"""Model selection for zero-shot runs: class-level validation when the classes allow it, P that
adapts to the classes left, and warnings when validation can only be item-level."""

from __future__ import annotations

import pytest

from deepmetric.config import SamplerConfig
from deepmetric.errors import DataError
from deepmetric.training import fit
from deepmetric.training.selection import fitted_sampler, validation_plan
from toy_training import toy_config, toy_dataset, toy_registries  # noqa: F401  (fixture)


def test_class_validation_falls_back_to_items_when_fewer_than_three_classes_would_train() -> None:
    assert validation_plan("classes", 6, 0.2) == ("classes", None)  # 2 held out, 4 train
    assert validation_plan("classes", 20, 0.2) == ("classes", None)  # 4 held out, 16 train
    assert validation_plan("classes", 5, 0.2) == ("classes", None)  # 2 held out, 3 train
    by, note = validation_plan("classes", 4, 0.25)  # RSSCN7 zero-shot: 2 held out would leave 2
    assert by == "items" and "4 classes" in note and "leave 2" in note and "saturates" in note
    assert validation_plan("classes", 10, 0.7) == ("classes", None)  # 7 held out, 3 train
    assert validation_plan("classes", 10, 0.8)[0] == "items"  # 8 held out would leave 2
    assert validation_plan("items", 3, 0.2) == ("items", None)
    assert validation_plan("classes", 3, 0.0) == ("classes", None)  # no validation at all


@pytest.mark.parametrize(("p", "k", "left", "want"), [(8, 4, 6, (6, 6)), (8, 3, 6, (6, 4)), (4, 8, 2, (2, 16))])
def test_p_adapts_to_the_classes_left_and_the_batch_keeps_its_size(p, k, left, want) -> None:
    sampler, note = fitted_sampler(SamplerConfig(p=p, k=k), left, 2)
    assert (sampler.p, sampler.k) == want
    assert sampler.p * sampler.k >= p * k and (sampler.p * (sampler.k - 1)) < p * k  # the smallest K that keeps it
    assert f"{want[0]} classes x {want[1]} items" in note
    unchanged, none = fitted_sampler(SamplerConfig(p=4, k=4), 6, 2)
    assert unchanged == SamplerConfig(p=4, k=4) and none is None
    with pytest.raises(DataError, match="leaves 1 training class"):
        fitted_sampler(SamplerConfig(p=4, k=4), 1, 3)


def three_class_toy(split: str, transform: object = None) -> object:
    return toy_dataset(split, transform, n_classes=3)


def test_a_run_with_three_training_classes_validates_on_items_and_says_so(tmp_path, toy_registries,
                                                                         monkeypatch) -> None:
    from deepmetric.training import builders

    monkeypatch.setitem(builders.DATASET_REGISTRY, "toy3", three_class_toy)
    summary = fit(toy_config("data.name=toy3", "sampler.p=3", "trainer.steps=2", "eval.k_values=[1]"), tmp_path / "r",
                  progress=False, report=False)
    warnings = " ".join(summary["warnings"])
    assert "too few to hold whole classes out" in warnings
    # the test classes (3-8) are unseen, so the item-level validation is flagged as such
    assert "item-level validation saturates" in warnings
    val = summary["evaluations"][0]
    assert val["step"] == 0  # the untrained network is the first candidate


def test_item_validation_of_a_zero_shot_run_warns_and_class_validation_does_not(tmp_path, toy_registries) -> None:
    items = fit(toy_config("data.val_by=items", "trainer.steps=2"), tmp_path / "items", progress=False, report=False)
    assert any("item-level validation saturates" in w for w in items["warnings"])
    classes = fit(toy_config("trainer.steps=2"), tmp_path / "classes", progress=False, report=False)
    assert not any("saturates" in w for w in classes["warnings"])
