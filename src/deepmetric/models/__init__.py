"""Models: timm backbones with offline weights, global pooling, embedding heads.

The usual entry point is :func:`create_embedder`::

    from deepmetric.models import create_embedder
    model = create_embedder("tf_efficientnet_lite0", pretrained="offline", embedding_dim=128)
    transform = model.eval_transform()
"""

from deepmetric.models.embedder import Embedder, create_embedder, set_batchnorm_eval
from deepmetric.models.heads import L2Normalize, LinearHead
from deepmetric.models.pooling import POOLINGS, GeM, AvgPool, MaxPool, build_pooling
from deepmetric.models.weights import (
    OFFLINE_WEIGHTS,
    find_cached_weights,
    has_offline_weights,
    load_pretrained_backbone,
    offline_imagenet_classifier,
    offline_weights_path,
    read_state_dict,
)

__all__ = [
    "OFFLINE_WEIGHTS",
    "POOLINGS",
    "AvgPool",
    "Embedder",
    "GeM",
    "L2Normalize",
    "LinearHead",
    "MaxPool",
    "build_pooling",
    "create_embedder",
    "find_cached_weights",
    "has_offline_weights",
    "load_pretrained_backbone",
    "offline_imagenet_classifier",
    "offline_weights_path",
    "read_state_dict",
    "set_batchnorm_eval",
]
