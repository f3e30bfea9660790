"""One registry mechanism (names or import paths) and the declared loss / model contracts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepmetric.errors import ConfigError
from deepmetric.losses import build_loss
from deepmetric.losses.classification import Hybrid
from deepmetric.losses.contracts import CenterLoss, ClassifierLoss, find_centers, find_classifier, loss_parts
from deepmetric.losses.synthesis import SymmetricalSynthesis
from deepmetric.models.contracts import EMBEDDING, MultiOutputModel, embedding_of
from deepmetric.registry import Registry, import_path


def test_registry_resolves_names_and_import_paths() -> None:
    reg = Registry("widget", {"linear": "torch.nn:Linear", "direct": nn.ReLU})
    assert reg.resolve("linear") is nn.Linear
    assert reg.resolve("direct") is nn.ReLU
    assert reg.resolve("torch.nn:Conv2d") is nn.Conv2d  # not registered: an import path
    assert reg.resolve("torch.nn:Module.train") is nn.Module.train
    with pytest.raises(ConfigError, match="Did you mean 'linear'") as info:
        reg.resolve("linaer")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="module 'no_such_pkg' cannot be imported"):
        reg.resolve("no_such_pkg.mod:Thing")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        reg.resolve("torch.nn:Nope")
    with pytest.raises(ConfigError, match="not an import path"):
        import_path("torch.nn")
    reg["extra"] = "torch.nn:Tanh"
    assert "extra" in reg and reg.resolve("extra") is nn.Tanh
    with pytest.raises(ConfigError):
        reg.register("a:b", nn.Tanh)


def test_a_loss_by_import_path_builds_like_a_registered_one() -> None:
    by_path = build_loss("deepmetric.losses.contrastive:ContrastiveLoss", pos_margin=0.0, neg_margin=0.5)
    by_name = build_loss("contrastive", pos_margin=0.0, neg_margin=0.5)
    x, y = torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), torch.arange(4).repeat(2)
    assert torch.equal(by_path(x, y), by_name(x, y))


@pytest.mark.parametrize(
    ("name", "params", "trained"),
    [
        ("triplet_hybrid", {"ce_weight": 0.0}, False),  # the case: CE off -> no classifier to trust
        ("triplet_hybrid", {"ce_weight": 1.0}, True),
        ("osm_caa", {"ce_weight": 0.0, "use_caa": False}, False),
        ("osm_caa", {"ce_weight": 1.0}, True),
        ("center_structured", {"use_ce": False}, False),
        ("center_structured", {}, True),
        ("normalized_softmax", {}, True),
        ("proxy_anchor", {}, True),
    ],
)
def test_classifier_is_found_only_when_trained(name: str, params: dict, trained: bool) -> None:
    loss = build_loss(name, num_classes=3, embedding_dim=8, **params)
    assert isinstance(loss, ClassifierLoss)
    assert (find_classifier(loss) is loss) == trained


def test_plain_pair_losses_offer_no_classifier_and_wrappers_are_walked() -> None:
    plain = build_loss("contrastive")
    assert not isinstance(plain, ClassifierLoss) and find_classifier(plain) is None
    hybrid_off = Hybrid(build_loss("contrastive"), ce_weight=0.0, num_classes=3, embedding_dim=8)
    assert find_classifier(hybrid_off) is None
    inner = build_loss("center_structured", num_classes=3, embedding_dim=8, use_ce=False)
    wrapped = Hybrid(SymmetricalSynthesis(build_loss("contrastive")), ce_weight=1.0, num_classes=3, embedding_dim=8)
    assert [type(p).__name__ for p in loss_parts(wrapped)] == ["Hybrid", "SymmetricalSynthesis", "ContrastiveLoss"]
    assert find_classifier(wrapped) is wrapped
    assert isinstance(inner, CenterLoss) and find_centers(inner) is inner and find_classifier(inner) is None
    frozen = build_loss("center_structured", num_classes=3, embedding_dim=8, use_structured=False, use_center=False)
    assert find_centers(frozen) is None  # only the CE term trains: the centers stay random


class _Named(nn.Module):
    output_dims = {"a": 2}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": x, EMBEDDING: 2 * x}


def test_embedding_of_follows_the_declared_contract() -> None:
    x = torch.ones(3, 2)
    assert isinstance(_Named(), MultiOutputModel)
    assert torch.equal(embedding_of(_Named(), _Named()(x)), 2 * x)
    assert torch.equal(embedding_of(nn.Identity(), x), x)
    with pytest.raises(Exception, match="returned dict"):
        embedding_of(nn.Identity(), {"a": x})

