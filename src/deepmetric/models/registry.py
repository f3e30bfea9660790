"""The model registry (``model.name``): name -> builder.

**Builder contract.** Called with the ``model.*`` keys its signature accepts (plus
``image_size`` from ``data.image_size``) and ``**model.params``; returns an ``nn.Module`` mapping
a batch of inputs to N x D embeddings (or, for a
:class:`~deepmetric.models.contracts.MultiOutputModel`, to named outputs with ``"embedding"``),
with ``.embedding_dim`` and optionally ``.train_transform()`` / ``.eval_transform()`` and
``.backbone_parameters()`` / ``.head_parameters()``. A ``model.*`` key that the builder does not
accept must stay at its default: a different value is an error.

``model.name`` may also be an import path ``package.module:Name`` to your own ``nn.Module`` class
or builder function.
"""

from __future__ import annotations

from deepmetric.registry import Registry

__all__ = ["MODELS"]

MODELS = Registry(
    "model",
    {
        "embedder": "deepmetric.models:create_embedder",
        "demal": "deepmetric.models.demal:create_demal",
        "audio_cnn": "deepmetric.models.audio:UtteranceEmbedder",
        "audio_tdnn": "deepmetric.models.audio_tdnn:TDNNEmbedder",
        "multilevel": "deepmetric.models.multilevel:MultiLevelEmbedder",
        "tracklet": "deepmetric.models.temporal:create_tracklet_model",
    },
)
