"""Typed, frozen configuration objects.

``to_dict`` / ``from_dict`` round-trip through plain JSON types; ``from_dict`` rejects unknown
keys so that a typo in a preset or a bundle written by a newer version is caught, not ignored.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field, fields
from typing import Any, Mapping, TypeVar

from .errors import ConfigError

T = TypeVar("T", bound="_Config")

BUNDLE_FORMAT = "sports_classifier.bundle"
BUNDLE_FORMAT_VERSION = 1
# A network input side outside this range is a corrupt or hostile config.json (the largest
# backbone here uses 260 px; 100,000 px would allocate 112 GiB per image).
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 2048
ENSEMBLE = "ensemble"  # ModelConfig.backbone of a bundle that averages several networks
MEMBER_KEYS = {"backbone": str, "image_size": int, "tta_flip": bool, "name": str}


class _Config:
    """Shared (de)serialisation for the frozen dataclasses below."""

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown key(s) {unknown}; known keys are {sorted(known)}"
            )
        kwargs = {}
        for name, value in data.items():
            if isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except TypeError as exc:  # missing required keys
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    def replace(self: T, **changes: Any) -> T:
        unknown = sorted(set(changes) - {f.name for f in fields(self)})  # type: ignore[arg-type]
        if unknown:
            raise ConfigError(f"{type(self).__name__}: unknown option(s) {unknown}")
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class TrainConfig(_Config):
    """Everything that decides a training run; recorded verbatim in the bundle.

    The defaults are the fast CPU recipe: a frozen ImageNet backbone whose features are
    computed once and cached, and a softmax head trained on the cache.
    """

    backbone: str = "efficientnet_lite0"
    image_size: int | None = None  # None: the backbone's own size
    weights: str = "imagenet"  # "imagenet", "none", or a path to a .weights.h5 file
    mode: str = "cached"  # "cached" (frozen part computed once) or "end_to_end"
    seed: int = 42
    batch_size: int = 32
    dropout: float = 0.2
    label_smoothing: float = 0.0
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    head_epochs: int = 40
    # Stage 2: unfreeze the last ``fine_tune_stages`` stages of the backbone (BatchNorm frozen);
    # with 0 stages and ``fine_tune_top``, only the top convolution (EfficientNet's 1x1 head
    # conv): a few cheap epochs on cached activations that add ~0.5 points (docs/accuracy.md).
    fine_tune_stages: int = 0
    fine_tune_top: bool = True
    fine_tune_epochs: int = 3
    fine_tune_learning_rate: float = 1e-4
    early_stopping_patience: int = 6
    reduce_lr_patience: int = 2
    reduce_lr_factor: float = 0.5
    # Training-only augmentation (the notebook's zoom, flip, shift), as Keras layers.
    augment: bool = True
    augment_views: int = 0  # cached mode: extra augmented views cached per training image
    zoom: float = 0.1
    shift: float = 0.1
    horizontal_flip: bool = True
    tta_flip: bool = False  # average the prediction on the image and its mirror image
    # Knowledge distillation (cached mode): a teacher bundle (path or hf:user/repo) whose
    # probabilities on each cached view the student learns to match, at a temperature; the loss
    # is (1 - distill_weight) * cross-entropy on the labels + distill_weight * T^2 * KL.
    distill_from: str | None = None
    distill_temperature: float = 2.0
    distill_weight: float = 0.7
    train_split: str = "train"
    valid_split: str = "valid"
    classes: tuple[str, ...] | None = None  # train on a subset of classes (quick experiments)
    max_per_class: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("cached", "end_to_end"):
            raise ConfigError(f"mode must be 'cached' or 'end_to_end', got {self.mode!r}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.learning_rate <= 0 or self.fine_tune_learning_rate <= 0:
            raise ConfigError("learning rates must be > 0")
        for name in ("head_epochs", "fine_tune_stages", "fine_tune_epochs", "augment_views"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.image_size is not None and self.image_size < 16:
            raise ConfigError(f"image_size must be >= 16 pixels, got {self.image_size}")
        if self.distill_from is not None:
            if self.mode != "cached":
                raise ConfigError("distillation (distill_from) needs mode='cached': the teacher's "
                                  "probabilities are cached per training view")
            if not self.distill_temperature > 0:
                raise ConfigError(f"distill_temperature must be > 0, got {self.distill_temperature}")
            if not 0.0 <= self.distill_weight <= 1.0:
                raise ConfigError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        if self.optimizer not in ("adam", "adamw", "sgd"):
            raise ConfigError(f"optimizer must be adam, adamw or sgd, got {self.optimizer!r}")


@dataclass(frozen=True)
class ModelConfig(_Config):
    """What a bundle's ``config.json`` holds: enough to rebuild the network offline."""

    backbone: str
    image_size: int
    labels: tuple[str, ...]
    dropout: float = 0.2
    tta_flip: bool = False
    format: str = BUNDLE_FORMAT
    format_version: int = BUNDLE_FORMAT_VERSION
    package_version: str = ""
    keras_version: str = ""
    # How to turn a photo into the network's input; the same function serves training.
    preprocessing: dict = field(
        default_factory=lambda: {
            "color": "RGB",
            "resize": "bilinear",
            "input_range": [0, 255],
            "normalization": "inside the network",
        }
    )
    files_sha256: dict = field(default_factory=dict)
    training: dict | None = None
    created: str = ""
    # backbone == "ensemble": the networks whose probabilities the bundle averages, one
    # {"backbone", "image_size", "tta_flip", "name"} each (see training/ensemble.py).
    members: tuple[dict, ...] = ()
    # The top probability under which a photo is called out of distribution, with how it was
    # chosen and what it achieves (ood.py); None: not chosen for this model.
    out_of_distribution: dict | None = None

    def __post_init__(self) -> None:
        _check_types(self)
        if self.format != BUNDLE_FORMAT:
            raise ConfigError(f"not a sports_classifier bundle config (format={self.format!r})")
        if not isinstance(self.format_version, int) or self.format_version > BUNDLE_FORMAT_VERSION:
            raise ConfigError(
                f"bundle format version {self.format_version!r} is newer than this package "
                f"supports ({BUNDLE_FORMAT_VERSION}); upgrade sports_classifier"
            )
        if len(self.labels) < 2 or len(set(self.labels)) != len(self.labels):
            raise ConfigError("labels must hold at least two distinct class names")
        if not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE:
            raise ConfigError(f"image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], got {self.image_size}")
        if (self.backbone == ENSEMBLE) != bool(self.members):
            raise ConfigError("an ensemble config (backbone 'ensemble') lists its members, and only "
                              "an ensemble config does")
        if self.members and len(self.members) < 2:
            raise ConfigError("an ensemble needs at least two members")
        for i, member in enumerate(self.members):
            _check_member(i, member)
        ood = self.out_of_distribution
        if ood is not None:
            threshold = ood.get("threshold") if isinstance(ood, Mapping) else None
            if (not isinstance(threshold, (int, float)) or isinstance(threshold, bool)
                    or not 0.0 <= threshold <= 1.0):
                raise ConfigError("out_of_distribution must be an object whose \"threshold\" is a "
                                  f"probability in [0, 1], got {ood!r:.80}")

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    @property
    def is_ensemble(self) -> bool:
        return bool(self.members)

    @property
    def backbones(self) -> list[str]:
        """The backbone of each network in the bundle (one, or one per ensemble member)."""
        return [m["backbone"] for m in self.members] if self.members else [self.backbone]

    @property
    def architecture(self) -> str:
        """A one-line description for people: the backbone, or the ensemble's members."""
        if not self.members:
            return self.backbone
        return "ensemble of " + " + ".join(f"{m['backbone']} ({m['image_size']} px)" for m in self.members)


def _check_member(i: int, member) -> None:
    if not isinstance(member, Mapping):
        raise ConfigError(f"ensemble member {i}: expected a JSON object, got {type(member).__name__}")
    unknown = sorted(set(member) - set(MEMBER_KEYS))
    missing = sorted({"backbone", "image_size"} - set(member))
    if unknown or missing:
        raise ConfigError(f"ensemble member {i}: unknown key(s) {unknown}, missing {missing}; "
                          f"known keys are {sorted(MEMBER_KEYS)}")
    for key, kind in MEMBER_KEYS.items():
        value = member.get(key)
        if value is not None and not isinstance(value, kind):
            raise ConfigError(f"ensemble member {i}: {key} must be {kind.__name__}, got {value!r}")
    size = member["image_size"]
    if isinstance(size, bool) or not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
        raise ConfigError(f"ensemble member {i}: image_size must be in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}], "
                          f"got {size!r}")


def _is(value, kind) -> bool:
    """``isinstance`` where a JSON ``true`` is not an int, an int is a float, NaN is neither."""
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, kind)


# ModelConfig's fields as config.json must hold them: a bundle is untrusted input, and an
# ill-typed field would otherwise surface later as a raw TypeError (or, for image_size, as a
# 100,000-pixel-wide array allocation).
_MODEL_TYPES = {
    "backbone": str, "image_size": int, "dropout": float, "tta_flip": bool, "format": str,
    "format_version": int, "package_version": str, "keras_version": str, "preprocessing": Mapping,
    "files_sha256": Mapping, "created": str,
}
_OPTIONAL_MAPPINGS = ("training", "out_of_distribution")
_WANTED = {Mapping: "a JSON object", float: "a finite number", int: "an integer", str: "a string",
           bool: "true or false"}


def _check_types(config: "ModelConfig") -> None:
    for name, kind in _MODEL_TYPES.items():
        value = getattr(config, name)
        if not _is(value, kind):
            raise ConfigError(f"{name} must be {_WANTED[kind]}, got {value!r:.80}")
    for name in _OPTIONAL_MAPPINGS:
        value = getattr(config, name)
        if value is not None and not isinstance(value, Mapping):
            raise ConfigError(f"{name} must be a JSON object or null, got {value!r:.80}")
    if not isinstance(config.labels, (tuple, list)) or not all(isinstance(x, str) for x in config.labels):
        raise ConfigError(f"labels must be a list of class names (strings), got {config.labels!r:.80}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in config.files_sha256.items()):
        raise ConfigError(f"files_sha256 must map file names to hex digests, got {config.files_sha256!r:.80}")
    if not isinstance(config.members, (tuple, list)):
        raise ConfigError(f"members must be a list, got {config.members!r:.80}")
    if not 0.0 <= config.dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {config.dropout}")
