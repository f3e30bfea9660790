"""Model selection for zero-shot retrieval: which validation split a run gets, and the sampler that
still fits the training classes left after it.

Zero-shot retrieval (the test classes are not training classes) needs a validation split that is
zero-shot too: whole training classes held out (``data.val_by: classes``). Validation carved from
items of every training class measures classes the network trains on; it saturates within a few
steps (MAP@R 0.95-0.98) and cannot tell which checkpoint transfers to unseen classes. The rules:

* :func:`validation_plan` -- ``data.val_by: classes`` holds out ``max(2, round(fraction x C))``
  whole classes; when that would leave fewer than 3 classes to train on (with 2, every negative of
  a class comes from the one other class, and RSSCN7's 4 training classes would train on 2), it
  falls back to ``data.val_by: items`` and says so
  (the untrained network, evaluated at step 0, stays a candidate for ``best.pt``, so selection
  can still prefer it);
* :func:`fitted_sampler` -- when the held-out classes leave fewer training classes than
  ``sampler.p``, P adapts to the classes left (at least 2; only when the classes held out are what
  leaves too few, never for a P larger than all training classes) and K grows so the batch keeps about
  P x K items; fewer than 2 classes left is an error naming the settings to change;
* :func:`item_validation_warning` -- a run that validates on items while its test classes are
  disjoint from its training classes gets a warning (printed, in metrics.json and the report).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from deepmetric.config import Config, SamplerConfig
from deepmetric.errors import DataError

__all__ = ["MIN_TRAINING_CLASSES", "fitted_sampler", "item_validation_warning", "validation_plan"]

#: training classes that must stay after whole classes are held out for validation
MIN_TRAINING_CLASSES = 3


def validation_plan(val_by: str, n_classes: int, fraction: float) -> tuple[str, str | None]:
    """``(val_by to use, warning or None)`` for a training split of ``n_classes`` classes."""
    if fraction <= 0 or val_by != "classes":
        return val_by, None
    held_out = max(2, round(fraction * n_classes))
    if n_classes - held_out >= MIN_TRAINING_CLASSES:
        return val_by, None
    return "items", (
        f"the training split has {n_classes} classes, too few to hold whole classes out for validation "
        f"({held_out} held out would leave {n_classes - held_out} to train on, fewer than {MIN_TRAINING_CLASSES}): "
        "validating on items of the training classes instead, which saturates and cannot tell which checkpoint "
        "transfers to unseen classes; the untrained network stays a candidate; consider eval.checkpoint=last or "
        "more training classes"
    )


def fitted_sampler(sampler: SamplerConfig, classes_left: int, classes_held_out: int) -> tuple[SamplerConfig, str | None]:
    """``sampler`` with P (and K) adapted to ``classes_left`` training classes when the
    ``classes_held_out`` validation classes left fewer than ``sampler.p``; a warning says so."""
    if sampler.name != "pk" or classes_left >= sampler.p:
        return sampler, None
    if classes_left < 2:
        raise DataError(
            f"holding {classes_held_out} classes out for validation leaves {classes_left} training class(es), "
            "fewer than the 2 a P x K batch needs; set data.val_by=items or a smaller data.val_fraction"
        )
    p = classes_left
    k = -(-sampler.p * sampler.k // p)  # ceil: keep about P x K items per batch
    return sampler.model_copy(update={"p": p, "k": k}), (
        f"data.val_by=classes held {classes_held_out} classes out for validation, leaving {classes_left} training "
        f"classes, fewer than sampler.p={sampler.p}: batches are {p} classes x {k} items instead of "
        f"{sampler.p} x {sampler.k}; set sampler.p / sampler.k yourself, or data.val_fraction, to choose otherwise"
    )


def _class_names(dataset: Any, labels: Sequence[int]) -> set[str] | None:
    names = getattr(dataset, "class_names", None)
    if names is None:
        return None
    names = [str(n) for n in names]
    return {names[y] for y in set(labels) if 0 <= y < len(names)}


def item_validation_warning(config: Config, val_by: str, support: Any, test: Any) -> str | None:
    """The warning for item-level validation (``val_by``, the one in effect) of a zero-shot run
    (None when it does not apply: class-level validation, no validation, selection on test, or
    test classes shared with training)."""
    if (val_by != "items" or config.data.val_fraction <= 0 or config.eval.split != "val"
            or config.eval.protocol not in ("retrieval", "reid")):
        return None
    train_names = _class_names(support, [int(y) for y in getattr(support, "labels", [])])
    test_names = _class_names(test, [int(y) for y in getattr(test, "labels", [])])
    if not train_names or not test_names or train_names & test_names:
        return None
    return ("validation holds out items of the training classes (data.val_by=items) but the test classes are "
            "unseen: item-level validation saturates and cannot tell which checkpoint transfers; set "
            "data.val_by=classes, or compare with eval.checkpoint=last")
