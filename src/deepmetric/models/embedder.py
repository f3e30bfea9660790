"""The embedding network: timm backbone -> global pooling -> linear head -> L2 normalisation.

``create_embedder`` builds it from a timm model name. The backbone is created with
``num_classes=0, global_pool=""`` so it returns its last feature map, which our pooling
(:mod:`deepmetric.models.pooling`) reduces to a vector; :class:`~deepmetric.models.heads.LinearHead`
projects it to ``embedding_dim`` and, with ``normalize=True``, the result lies on the unit sphere.

The embedder knows its own input format (``input_size``, ``mean``, ``std`` from timm's pretrained
config) and builds matching torchvision transforms, so callers never guess normalisation.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from torch import Tensor, nn
from torchvision import transforms as T

from deepmetric.data.transforms import build_eval_transform, build_train_transform
from deepmetric.errors import ConfigError, closest_match, unknown_name_message
from deepmetric.models.heads import L2Normalize, LinearHead
from deepmetric.models.pooling import POOLINGS, build_pooling
from deepmetric.models.weights import load_pretrained_backbone


def set_batchnorm_eval(module: nn.Module) -> int:
    """Put every BatchNorm layer of ``module`` in eval mode (running statistics frozen).

    Affine weights stay trainable; only the running mean/variance stop updating and the batch is
    normalised with them. Returns the number of BatchNorm layers affected.
    """
    count = 0
    for child in module.modules():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            child.eval()
            count += 1
    return count


class Embedder(nn.Module):
    """Image -> embedding network. Build it with :func:`create_embedder`.

    Attributes:
        backbone: the timm feature extractor (no pooling, no classifier).
        pool: global pooling of the feature map.
        head: projection to ``embedding_dim`` (``nn.Identity`` when ``embedding_dim`` is None).
        input_size: ``(C, H, W)`` the transforms produce.
        mean, std: per-channel normalisation of the pretrained weights.
        feature_dim: size of the pooled backbone features.
        embedding_dim: size of the output (``feature_dim`` without a head).
        freeze_bn: when True, BatchNorm running statistics stay fixed in train mode.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        embedding_dim: int | None = 128,
        pooling: str = "avg",
        normalize: bool = True,
        input_size: tuple[int, int, int] = (3, 224, 224),
        mean: tuple[float, ...] = (0.485, 0.456, 0.406),
        std: tuple[float, ...] = (0.229, 0.224, 0.225),
        interpolation: str = "bicubic",
        crop_pct: float = 0.875,
        dropout: float = 0.0,
        freeze_bn: bool = False,
        backbone_name: str = "",
        weights_source: str = "random",
        train_scale: tuple[float, float] = (0.16, 1.0),
        hflip: float = 0.5,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.pool = build_pooling(pooling)
        self.head: nn.Module = (
            LinearHead(feature_dim, embedding_dim, dropout) if embedding_dim is not None else nn.Identity()
        )
        self.norm: nn.Module = L2Normalize() if normalize else nn.Identity()
        self.feature_dim = int(feature_dim)
        self.embedding_dim = int(embedding_dim) if embedding_dim is not None else self.feature_dim
        self.pooling = pooling
        self.normalize = normalize
        self.input_size = tuple(int(v) for v in input_size)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.interpolation = interpolation
        self.crop_pct = float(crop_pct)
        self.backbone_name = backbone_name
        self.weights_source = weights_source
        self.freeze_bn = freeze_bn
        self.train_scale = (float(train_scale[0]), float(train_scale[1]))
        self.hflip = float(hflip)
        self.train(self.training)

    # ------------------------------------------------------------------ forward
    def forward_features(self, images: Tensor) -> Tensor:
        """Pooled backbone features ``(B, feature_dim)`` (before the head)."""
        return self.pool(self.backbone.forward_features(images))

    def forward(self, images: Tensor) -> Tensor:
        """Embeddings ``(B, embedding_dim)``, unit-norm when ``normalize`` is set."""
        return self.norm(self.head(self.forward_features(images)))

    # ------------------------------------------------------------------ train mode
    def train(self, mode: bool = True) -> Embedder:
        """Like ``nn.Module.train``, but BatchNorm layers stay in eval mode when ``freeze_bn``."""
        super().train(mode)
        if mode and self.freeze_bn:
            set_batchnorm_eval(self)
        return self

    def set_freeze_bn(self, freeze: bool) -> None:
        """Turn frozen BatchNorm statistics on or off (takes effect immediately)."""
        self.freeze_bn = freeze
        self.train(self.training)

    # ------------------------------------------------------------------ parameter groups
    def backbone_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the pretrained backbone (give them a smaller learning rate)."""
        return self.backbone.parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters added on top of the backbone: pooling (GeM's p) and the projection head."""
        yield from self.pool.parameters()
        yield from self.head.parameters()

    # ------------------------------------------------------------------ transforms
    def train_transform(self, scale: tuple[float, float] | None = None, hflip: float | None = None) -> T.Compose:
        """Training augmentation producing ``input_size`` tensors normalised for this backbone.

        Set ``hflip=0`` for data whose identity changes under mirroring (characters, text).
        Defaults: the ``train_scale`` and ``hflip`` given to :func:`create_embedder`.
        """
        scale = self.train_scale if scale is None else scale
        hflip = self.hflip if hflip is None else hflip
        return build_train_transform(self.input_size, self.mean, self.std, self.interpolation, scale, hflip)

    def eval_transform(self) -> T.Compose:
        """Deterministic resize + center crop producing ``input_size`` tensors."""
        return build_eval_transform(self.input_size, self.mean, self.std, self.interpolation, self.crop_pct)

    def extra_repr(self) -> str:
        return (
            f"backbone={self.backbone_name!r}, weights={self.weights_source!r}, input_size={self.input_size}, "
            f"feature_dim={self.feature_dim}, embedding_dim={self.embedding_dim}, freeze_bn={self.freeze_bn}"
        )


def _per_channel(values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """Normalisation constants for ``channels`` inputs (the grey channel takes the first value)."""
    values = tuple(float(v) for v in values)
    return values[:channels] if channels <= len(values) else tuple(values[i % len(values)] for i in range(channels))


def create_embedder(
    backbone: str = "tf_efficientnet_lite0",
    pretrained: bool | str | Path = "offline",
    embedding_dim: int | None = 128,
    pooling: str = "avg",
    normalize: bool = True,
    image_size: int | None = None,
    in_chans: int = 3,
    dropout: float = 0.0,
    freeze_bn: bool = False,
    train_scale: tuple[float, float] = (0.16, 1.0),
    hflip: float = 0.5,
) -> Embedder:
    """Build an :class:`Embedder` on a timm backbone. Never touches the network.

    Args:
        backbone: timm model name (``timm.list_models()``).
        pretrained: ``"offline"`` (packaged ImageNet weights; for backbones without a package the
            local timm cache), ``True`` (local timm cache only), ``False`` (random init), or a path
            to a state dict file with timm's tensor names. See :mod:`deepmetric.models.weights`.
        embedding_dim: output size of the linear head; ``None`` for no head (raw pooled features).
        pooling: ``"avg"``, ``"gem"`` (learnable generalized mean) or ``"max"``.
        normalize: L2-normalise the output.
        image_size: square input side; ``None`` uses the pretrained config (224 for most models).
        in_chans: input channels (1 for grey images; pretrained first conv is adapted).
        dropout: dropout before the head.
        freeze_bn: keep BatchNorm running statistics fixed in train mode (recommended when
            fine-tuning on small data, see METHODS.md "Training practice").
        train_scale: area range of the training random-resized crop (e.g. ``(0.7, 1.0)`` for
            characters, where small crops destroy the identity).
        hflip: probability of a horizontal flip in training (0 for text and characters).
    """
    import timm

    if pooling not in POOLINGS:
        raise ConfigError(unknown_name_message("pooling", pooling, POOLINGS))
    if image_size is not None and image_size < 8:
        raise ConfigError(f"image_size must be >= 8 pixels, got {image_size}")
    if in_chans < 1:
        raise ConfigError(f"in_chans must be >= 1, got {in_chans}")
    if not timm.is_model(backbone):
        hint = closest_match(backbone, timm.list_models())
        did_you_mean = f" Did you mean '{hint}'?" if hint else ""
        raise ConfigError(
            f"unknown backbone '{backbone}'.{did_you_mean} List the valid names with "
            "python -c \"import timm; print(timm.list_models())\""
        )
    model = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
    source = load_pretrained_backbone(model, backbone, pretrained)
    cfg = timm.data.resolve_data_config({}, model=model)
    _, h, w = cfg["input_size"]
    if image_size is not None:
        h = w = int(image_size)
    interpolation = cfg.get("interpolation", "bicubic")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bicubic"
    return Embedder(
        backbone=model,
        feature_dim=int(model.num_features),
        embedding_dim=embedding_dim,
        pooling=pooling,
        normalize=normalize,
        input_size=(in_chans, h, w),
        mean=_per_channel(cfg["mean"], in_chans),
        std=_per_channel(cfg["std"], in_chans),
        interpolation=interpolation,
        crop_pct=float(cfg.get("crop_pct", 0.875)),
        dropout=dropout,
        freeze_bn=freeze_bn,
        backbone_name=backbone,
        weights_source=source,
        train_scale=_check_scale(train_scale),
        hflip=_check_probability(hflip),
    )


def _check_scale(scale: tuple[float, float] | list[float]) -> tuple[float, float]:
    if len(scale) != 2 or not 0.0 < float(scale[0]) <= float(scale[1]) <= 1.0:
        raise ConfigError(f"train_scale must be [low, high] with 0 < low <= high <= 1, got {list(scale)}")
    return float(scale[0]), float(scale[1])


def _check_probability(p: float) -> float:
    if not 0.0 <= float(p) <= 1.0:
        raise ConfigError(f"hflip must be a probability in [0, 1], got {p}")
    return float(p)

