"""Typed model configuration: the lego backbone, its task router, and family-specific sizes.

These dataclasses are Hydra structured configs (`conf/model/*.yaml` are flat mappings of
`ModelConfig` fields). One dataclass covers both backbone families; fields of the other family
keep their defaults and are ignored. The defaults are the tiny CPU models (`ModelConfig()` is
`gppf_r50_tiny`; with `family="vit"` it is `gppf_vit_tiny` apart from the name).
`__post_init__` validates, so a bad value fails when the config is turned into an object, with a
message naming the key and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

FAMILIES = ("resnet", "vit")


def _fail(key: str, value: Any, why: str) -> None:
    raise ValueError(f"`{key}`={value!r} {why}")


@dataclass(kw_only=True)
class RouterConfig:
    """Task router: learned per-task, per-layer logits over the layer's legos (DESIGN.md §2)."""

    gumbel_warmup_steps: int = 0
    """Steps during which Gumbel noise (annealed to zero) perturbs the top-k selection."""
    gumbel_tau: float = 1.0
    """Softmax temperature at step 0 of the warm-up; annealed linearly to 1."""
    balance_weight: float = 0.01
    """Weight of the usage-balance regularizer (mean usage per lego close to uniform)."""
    sharing_weight: float = 0.0
    """Weight of the sharing regularizer (overlap between tasks' routing distributions)."""
    freeze_after: int = -1
    """From this step on the selected legos are fixed; -1 = never."""
    noise_seed: int = 0
    """Base seed of the deterministic Gumbel noise and of the router's initial logits."""

    def __post_init__(self) -> None:
        if self.gumbel_warmup_steps < 0:
            _fail("model.router.gumbel_warmup_steps", self.gumbel_warmup_steps, "must be >= 0")
        if not self.gumbel_tau > 0:
            _fail("model.router.gumbel_tau", self.gumbel_tau, "must be > 0")
        if self.balance_weight < 0:
            _fail("model.router.balance_weight", self.balance_weight, "must be >= 0")
        if self.sharing_weight < 0:
            _fail("model.router.sharing_weight", self.sharing_weight, "must be >= 0")
        if self.freeze_after < -1:
            _fail("model.router.freeze_after", self.freeze_after, "must be >= 0, or -1 for never")


@dataclass(kw_only=True)
class ModelConfig:
    """A GPPF backbone: `num_legos` legos per lego layer, `top_k` active per task and layer."""

    name: str = "gppf_r50_tiny"
    family: str = "resnet"
    """"resnet" (GroupNorm bottleneck legos) or "vit" (LayerNorm, lego MLPs)."""
    num_legos: int = 4
    top_k: int = 2
    ratio: float = 0.5
    """Lego width as a fraction of the dense layer's width (bottleneck mid width, MLP hidden).

    Compute parity with the dense model: a lego MLP's cost is linear in `ratio`, so `1/top_k`
    matches the dense ViT; a bottleneck's 3×3 conv is quadratic in it, so GPPF-R50 needs more
    (`0.625` for k=2, see conf/model/gppf_r50.yaml and `gppf-model summary`)."""

    # --- resnet family (defaults: the tiny CPU model, conf/model/gppf_r50_tiny.yaml) ---
    stem_channels: int = 16
    stem_kernel: int = 5
    stem_stride: int = 4
    stem_pool: bool = False
    """Stride-2 3×3 max-pool after the stem conv (ResNet); the tiny model uses a stride-4 conv."""
    widths: list[int] = field(default_factory=lambda: [16, 32, 64, 128])
    """Output channels of each stage."""
    blocks: list[int] = field(default_factory=lambda: [1, 1, 1, 1])
    """Lego layers (bottleneck blocks) per stage."""
    expansion: int = 2
    """Stage width / dense bottleneck mid width; a lego's mid width is width/expansion*ratio."""
    gn_groups: int = 8
    """GroupNorm groups (the largest divisor of the channel count not above this)."""

    # --- vit family (defaults: conf/model/gppf_vit_tiny.yaml) ---
    patch_size: int = 8
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 2
    mlp_ratio: float = 4.0

    router: RouterConfig = field(default_factory=RouterConfig)

    def __post_init__(self) -> None:
        if isinstance(self.router, dict):
            self.router = RouterConfig(**self.router)
        if self.family not in FAMILIES:
            _fail("model.family", self.family, f"must be one of {list(FAMILIES)}")
        if self.num_legos < 1:
            _fail("model.num_legos", self.num_legos, "must be >= 1")
        if self.top_k < 1:
            _fail("model.top_k", self.top_k, "must be >= 1")
        if self.top_k > self.num_legos:
            raise ValueError(
                f"`model.top_k`={self.top_k} must be <= `model.num_legos`={self.num_legos}"
            )
        if not 0 < self.ratio <= 1:
            _fail("model.ratio", self.ratio, "must be in (0, 1]")
        if self.family == "resnet":
            self._validate_resnet()
        else:
            self._validate_vit()

    def _validate_resnet(self) -> None:
        if self.stem_channels < 1:
            _fail("model.stem_channels", self.stem_channels, "must be >= 1")
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            _fail("model.stem_kernel", self.stem_kernel, "must be a positive odd number")
        if self.stem_stride not in (1, 2, 4):
            _fail("model.stem_stride", self.stem_stride, "must be 1, 2 or 4")
        if not self.widths or len(self.widths) != len(self.blocks):
            raise ValueError(
                f"`model.widths`={list(self.widths)} and `model.blocks`={list(self.blocks)} "
                "must be non-empty and of equal length"
            )
        if any(b < 1 for b in self.blocks):
            _fail("model.blocks", list(self.blocks), "must all be >= 1")
        if self.expansion < 1:
            _fail("model.expansion", self.expansion, "must be >= 1")
        if self.gn_groups < 1:
            _fail("model.gn_groups", self.gn_groups, "must be >= 1")
        for w in self.widths:
            if w < 1 or w % self.expansion:
                _fail("model.widths", list(self.widths), f"must be multiples of {self.expansion}")
            if self.lego_width(w) < 1:
                _fail("model.ratio", self.ratio, f"gives an empty lego for stage width {w}")

    def _validate_vit(self) -> None:
        for key in ("patch_size", "embed_dim", "depth", "num_heads"):
            if getattr(self, key) < 1:
                _fail(f"model.{key}", getattr(self, key), "must be >= 1")
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"`model.embed_dim`={self.embed_dim} must be divisible by "
                f"`model.num_heads`={self.num_heads}"
            )
        if self.embed_dim % 8:
            _fail("model.embed_dim", self.embed_dim, "must be a multiple of 8")
        if self.patch_size not in (4, 8, 16, 32):
            _fail("model.patch_size", self.patch_size, "must be 4, 8, 16 or 32 (feature pyramid)")
        if self.mlp_ratio <= 0 or self.lego_width(self.embed_dim) < 1:
            _fail("model.mlp_ratio", self.mlp_ratio, "gives an empty lego MLP")

    @property
    def num_layers(self) -> int:
        """Lego layers in the backbone (bottleneck blocks or transformer blocks)."""
        return sum(self.blocks) if self.family == "resnet" else self.depth

    def lego_width(self, width: int) -> int:
        """Hidden width of one lego in a layer of dense width `width` (channels or embed dim)."""
        if self.family == "resnet":
            return max(0, round(width // self.expansion * self.ratio))
        return max(0, round(width * self.mlp_ratio * self.ratio))


def model_config_from_dict(values: dict[str, Any]) -> ModelConfig:
    """Build a `ModelConfig` from a plain mapping (e.g. a loaded `conf/model/*.yaml`)."""
    known = {f.name for f in fields(ModelConfig)}
    for key in values:
        if key not in known:
            raise ValueError(f"`model.{key}` is not a model config field (known: {sorted(known)})")
    values = dict(values)
    router = values.pop("router", None) or {}
    router_known = {f.name for f in fields(RouterConfig)}
    for key in router:
        if key not in router_known:
            raise ValueError(f"`model.router.{key}` is not a router config field")
    return ModelConfig(**values, router=RouterConfig(**router))
