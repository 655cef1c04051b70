"""Recipe configuration: nested dataclasses, YAML files, ``--section.key value`` overrides.

Everything is checked when the configuration is built, before any data is read or any weight
trained: unknown sections or keys, wrong types, unknown datasets/methods, regimes outside
(0, 100] and missing data folders raise :class:`ConfigError` with what to change.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import types
import typing
from typing import Any

import yaml

from hebbopt.data.datasets import check_source

METHODS = ("hpca", "swta", "vae", "none")


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which key and what is allowed."""


@dataclasses.dataclass
class DataConfig:
    name: str = "digits"  #: one of hebbopt.data.DATASETS
    root: str | None = None  #: dataset folder (default $HEBBOPT_DATA/<name>)
    img_size: int | None = None  #: resize to this (default: native; digits 32)
    in_memory: bool | None = None  #: decode into a cached uint8 tensor (default: all but imagefolder)
    download: bool = False  #: let torchvision download CIFAR
    cache: str | None = None  #: cache folder (default $HEBBOPT_CACHE or ~/.cache/hebbopt)
    val_size: int = 0  #: held-out labelled training images for early stopping (0: keep last epoch)
    workers: int = 0  #: DataLoader workers for streamed folders
    synthetic_size: int = 512  #: training images of the synthetic dataset


@dataclasses.dataclass
class ModelConfig:
    name: str = "hebb_alexnet_6l"  #: any timm model name
    kwargs: dict = dataclasses.field(default_factory=dict)  #: extra timm.create_model arguments
    channels_last: bool = True


@dataclasses.dataclass
class PretrainConfig:
    method: str = "hpca"  #: hpca | swta | vae | none
    lr: float = 1e-3  #: Hebbian learning rate η
    epochs: int = 1  #: Hebbian epochs (per layer when schedule is layerwise)
    batch_size: int = 64  #: per process
    schedule: str = "all"  #: all (every layer at once, as the paper) | layerwise
    temperature: float = 0.02  #: SWTA softmax temperature T
    similarity: str = "raised_cos2"  #: SWTA similarity
    activation: str = "relu"  #: HPCA activation
    include: list | None = None  #: layer name patterns to hook (default: all hidden Conv2d/Linear)
    exclude: list | None = None
    compile: typing.Any = "auto"  #: True | False | auto (CUDA only)


@dataclasses.dataclass
class VAEConfig:
    beta: float = 0.5  #: β of the β-VAE bound
    latents: int = 256  #: Gaussian latent variables
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3  #: SGD, constant then halved as in fine-tuning
    momentum: float = 0.9


@dataclasses.dataclass
class FinetuneConfig:
    regime: float = 100.0  #: percent of the training set labelled
    balanced: bool = True  #: class-balanced subset (False: plain random, as the paper)
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-2
    dropout: float = 0.5
    lr_constant_epochs: int = 10  #: lr constant for these epochs, then halved every lr_halve_every
    lr_halve_every: int = 2


@dataclasses.dataclass
class SweepConfig:
    methods: list = dataclasses.field(default_factory=lambda: ["hpca", "swta", "vae", "none"])
    regimes: list = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5, 10, 25, 100])
    seeds: list = dataclasses.field(default_factory=lambda: [0, 1, 2])
    pretrain_epochs: dict = dataclasses.field(
        default_factory=dict
    )  #: per-method pretrain.epochs, e.g. {hpca: 12}


@dataclasses.dataclass
class RunConfig:
    dir: str = "runs/default"  #: run folder: resolved config, checkpoints, metrics, weights
    seed: int = 0
    mixed_precision: str = "no"  #: no | bf16 | fp16 (accelerate)
    cpu: bool = False  #: force the CPU
    threads: int = 0  #: torch CPU threads (0: torch's default)
    progress: bool = True  #: progress bars (main process only)


@dataclasses.dataclass
class Config:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    vae: VAEConfig = dataclasses.field(default_factory=VAEConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys changed, e.g. ``cfg.replace(finetune={"regime": 5})`` (checked)."""
        raw = self.to_dict()
        for section, values in sections.items():
            _section_fields(section)
            raw[section].update(values)
        return from_dict(raw)


def _section_fields(section: str) -> dict[str, dataclasses.Field]:
    fields = {f.name: f for f in dataclasses.fields(Config)}
    if section not in fields:
        raise ConfigError(f"unknown config section {section!r}: choose one of {sorted(fields)}")
    return {f.name: f for f in dataclasses.fields(fields[section].default_factory)}  # type: ignore[arg-type]


def _coerce(where: str, value: Any, annotation: Any) -> Any:
    hint = eval(annotation, globals()) if isinstance(annotation, str) else annotation
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in options or hint is typing.Any:
            return None
        raise ConfigError(f"{where} must not be null")
    if hint is typing.Any:
        return value
    for option in options:
        if option is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if option is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if option in (str, bool, dict, list) and isinstance(value, option):
            return value
    names = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise ConfigError(f"{where} must be {names}, got {value!r} ({type(value).__name__})")


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and check a :class:`Config` from nested dicts (missing keys take defaults)."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a config is a mapping of sections, got {type(raw).__name__}")
    sections = {}
    for section, values in raw.items():
        fields = _section_fields(section)
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        kwargs = {}
        for key, value in values.items():
            if key not in fields:
                raise ConfigError(f"unknown config key {section}.{key}: valid keys are {sorted(fields)}")
            kwargs[key] = _coerce(f"{section}.{key}", value, fields[key].type)
        sections[section] = dataclasses.fields(Config)[_index(section)].default_factory(**kwargs)  # type: ignore[misc]
    cfg = Config(**sections)
    validate(cfg)
    return cfg


def _index(section: str) -> int:
    return [f.name for f in dataclasses.fields(Config)].index(section)


def _regime(where: str, s: Any) -> None:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s) or not 0 < s <= 100:
        raise ConfigError(f"{where} must be a percentage in (0, 100], got {s!r}")


def validate(cfg: Config) -> None:
    """Check values that types cannot: names, ranges, data folders. Raises :class:`ConfigError`."""
    try:
        check_source(cfg.data.name, cfg.data.root, cfg.data.download)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for method in [cfg.pretrain.method, *cfg.sweep.methods]:
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}: choose from {METHODS}")
    _regime("finetune.regime", cfg.finetune.regime)
    for s in cfg.sweep.regimes:
        _regime("every sweep.regimes entry", s)
    for method, epochs in cfg.sweep.pretrain_epochs.items():
        if (
            method not in ("hpca", "swta")
            or isinstance(epochs, bool)
            or not isinstance(epochs, int)
            or epochs < 0
        ):
            raise ConfigError(
                f"sweep.pretrain_epochs maps hpca/swta to epochs >= 0, got {method!r}: {epochs!r}"
            )
    for seed in cfg.sweep.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"sweep.seeds must be integers, got {seed!r}")
    if cfg.pretrain.schedule not in ("all", "layerwise"):
        raise ConfigError(f"pretrain.schedule must be 'all' or 'layerwise', got {cfg.pretrain.schedule!r}")
    if cfg.pretrain.compile not in (True, False, "auto"):
        raise ConfigError(f"pretrain.compile must be true, false or auto, got {cfg.pretrain.compile!r}")
    if cfg.run.mixed_precision not in ("no", "bf16", "fp16"):
        raise ConfigError(f"run.mixed_precision must be no, bf16 or fp16, got {cfg.run.mixed_precision!r}")
    positive = {
        "pretrain.lr": cfg.pretrain.lr,
        "pretrain.batch_size": cfg.pretrain.batch_size,
        "pretrain.temperature": cfg.pretrain.temperature,
        "vae.beta": cfg.vae.beta,
        "vae.latents": cfg.vae.latents,
        "vae.batch_size": cfg.vae.batch_size,
        "vae.lr": cfg.vae.lr,
        "finetune.batch_size": cfg.finetune.batch_size,
        "finetune.lr": cfg.finetune.lr,
        "finetune.lr_halve_every": cfg.finetune.lr_halve_every,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{key} must be > 0, got {value}")
    non_negative = {
        "pretrain.epochs": cfg.pretrain.epochs,
        "vae.epochs": cfg.vae.epochs,
        "finetune.epochs": cfg.finetune.epochs,
        "finetune.weight_decay": cfg.finetune.weight_decay,
        "finetune.lr_constant_epochs": cfg.finetune.lr_constant_epochs,
        "data.val_size": cfg.data.val_size,
        "run.threads": cfg.run.threads,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if not 0 <= cfg.finetune.dropout < 1:
        raise ConfigError(f"finetune.dropout must be in [0, 1), got {cfg.finetune.dropout}")


def load(path: str | pathlib.Path | None = None, overrides: list[str] | None = None) -> Config:
    """A YAML file (sections as in :class:`Config`), then ``--section.key value`` overrides.

    Override values are parsed as YAML (``--sweep.seeds [0,1]``, ``--data.root null``).

    Example:
        >>> cfg = load(None, ["--finetune.regime", "5", "--data.name", "synthetic"])
        >>> cfg.finetune.regime, cfg.data.name
        (5.0, 'synthetic')
    """
    raw: dict[str, Any] = {}
    if path is not None:
        path = pathlib.Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        raw = yaml.safe_load(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config is a mapping of sections")
    overrides = list(overrides or [])
    while overrides:
        flag = overrides.pop(0)
        if not flag.startswith("--") or "." not in flag:
            raise ConfigError(f"override {flag!r}: use --section.key value, e.g. --finetune.epochs 5")
        key, _, inline = flag[2:].partition("=")
        if not inline:
            if not overrides:
                raise ConfigError(f"override {flag} has no value")
            inline = overrides.pop(0)
        section, _, name = key.partition(".")
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"config section {section!r} must be a mapping")
        raw[section][name] = yaml.safe_load(inline)
    return from_dict(raw)


def dump(cfg: Config) -> str:
    """The resolved configuration as YAML (what a run folder records)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
