"""The sections of a recipe's configuration (``data``, ``model``, ``pretrain``, ``vae``,
``finetune``, ``sweep``, ``probe``, ``run``): one dataclass each, every key with its type and
default; choices are ``Literal`` types, checked when the configuration is parsed
(:mod:`hebbopt.training.config`), ranges and names by :mod:`hebbopt.training.config_checks`.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Literal

from hebbopt.rules import RESERVED, RULES


def methods() -> tuple[str, ...]:
    """The pre-training methods: every Hebbian rule of :data:`hebbopt.rules.RULES` (a rule registered
    after import included), the β-VAE baseline, or none (the network starts from its random
    initialisation).

    Returns:
        the method names, the rules first in registry order.

    Examples:
        >>> methods()[-2:]
        ('vae', 'none')
    """
    return (*RULES, *RESERVED)


class ConfigError(ValueError):
    """A configuration that cannot run; the message says which key and what is allowed."""


RESULT_FREE_DATA_KEYS = ("title", "workers")
"""Keys of section ``data`` that change no result: the dataset's name, and the worker processes
that only decode streamed images (augmentation is drawn in the main process from a seeded
generator). A resume may change them, and they are not part of a cell's identity."""


@dataclasses.dataclass
class DataConfig:
    """Section ``data``: the dataset and how it is read (see :func:`~hebbopt.data.datasets.load_dataset`).

    Args:
        name: one of :data:`~hebbopt.data.datasets.DATASETS`.
        root: the dataset's folder (default ``$HEBBOPT_DATA/<name>``); ``~`` and ``$VARS`` are expanded.
        img_size: resize images to ``img_size``×``img_size`` (default: the native size; 32 for
            ``digits`` and ``synthetic``, 224 for streamed folders).
        in_memory: decode into a cached uint8 tensor (default: every dataset but ``imagefolder``).
        download: let torchvision download CIFAR when ``root`` holds no copy.
        cache: cache folder (default ``$HEBBOPT_CACHE``, else ``~/.cache/hebbopt``).
        val_size: training images held out, with their labels, for early stopping (see
            :func:`~hebbopt.data.regimes.validation_split`); 0: no validation, the last epoch is kept.
        workers: DataLoader worker processes for streamed folders.
        synthetic_size: training images of the ``synthetic`` dataset.
        title: the dataset's name in records, tables and plots (default: ``name``); it changes no
            result, so it is not part of a cell's identity (:func:`~hebbopt.sweeps.records.cell_digest`).
    """

    name: str = "digits"
    root: str | None = None
    img_size: int | None = None
    in_memory: bool | None = None
    download: bool = False
    cache: str | None = None
    val_size: int = 0
    workers: int = 0
    synthetic_size: int = 512
    title: str | None = None

    @property
    def label(self) -> str:
        """The dataset's name in records and tables: ``title``, else ``name``."""
        return self.title or self.name


@dataclasses.dataclass
class ModelConfig:
    """Section ``model``: the network, made by ``timm.create_model``.

    Args:
        name: any timm model name; ``hebb_alexnet_6l`` and ``hebb_alexnet_10l`` are the paper's
            networks (:mod:`hebbopt.models.alexnet`).
        kwargs: extra ``timm.create_model`` arguments; ``in_chans``, ``num_classes`` and, for
            ``hebb_alexnet_*``, ``img_size`` default to the dataset's.
        channels_last: the model and the batches in channels-last memory format.
    """

    name: str = "hebb_alexnet_6l"
    kwargs: dict = dataclasses.field(default_factory=dict)
    channels_last: bool = True


@dataclasses.dataclass
class PretrainConfig:
    """Section ``pretrain``: unsupervised pre-training (:func:`~hebbopt.training.pretrain.pretrain`).

    Args:
        method: a Hebbian rule of :data:`hebbopt.rules.RULES` (``--help`` lists them), ``vae``
            (the β-VAE baseline, set up by :class:`VAEConfig`) or ``none``; see :func:`methods`.
        lr: the Hebbian learning rate η.
        epochs: Hebbian epochs (per layer when ``schedule`` is ``layerwise``).
        batch_size: images per batch, per process.
        schedule: ``all`` (every layer at once, as the paper) or ``layerwise`` (one layer after
            the other, ``epochs`` each).
        rule_kwargs: hyper-parameters per rule, e.g. ``{swta: {temperature: 0.02}, krotov: {k: 3}}``
            (names as ``hebbopt.rules.RULES[rule].hyper``); a rule not listed takes its defaults.
        layer_defaults: give each layer the settings a paper tuned for this rule on this model,
            as param groups (:data:`hebbopt.models.LAYER_HYPER`: SoftHebb's lr and temperature on
            the ``softhebb_*`` networks); ``rule_kwargs`` still override them.
        include: layer-name patterns to train (default: every hidden Conv2d/Linear; see
            :func:`~hebbopt.hebbian_layers`).
        exclude: layer-name patterns to leave untrained.
        compile: ``true``, ``false`` or ``auto`` (compile the rules under ``torch.compile`` on CUDA
            only).
        statistics_dtype: ``float32`` (exact with respect to the activations) or ``bfloat16``
            (each batch's statistics computed in bf16, rounded once per batch, summed in float32:
            with ``run.mixed_precision: bf16``, about twice as fast on a CPU with bf16 units; see
            docs/benchmarks.md for what it costs in accuracy).
    """

    method: str = "hpca"
    lr: float = 1e-3
    epochs: int = 1
    batch_size: int = 64
    schedule: Literal["all", "layerwise"] = "all"
    rule_kwargs: dict = dataclasses.field(default_factory=lambda: {"swta": {"temperature": 0.02}})
    layer_defaults: bool = True
    include: list | None = None
    exclude: list | None = None
    compile: typing.Any = "auto"
    statistics_dtype: Literal["float32", "bfloat16"] = "float32"


@dataclasses.dataclass
class VAEConfig:
    """Section ``vae``: the β-VAE baseline (:func:`~hebbopt.training.vae.pretrain_vae`).

    Args:
        beta: β, the weight of the KL term of the β-VAE bound.
        latents: Gaussian latent variables.
        epochs: training epochs.
        batch_size: images per batch, per process.
        lr: the SGD learning rate, constant then halved on the fine-tuning schedule
            (``finetune.lr_constant_epochs``, ``finetune.lr_halve_every``).
        momentum: SGD momentum (Nesterov when > 0).
    """

    beta: float = 0.5
    latents: int = 256
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9


@dataclasses.dataclass
class FinetuneConfig:
    """Section ``finetune``: supervised fine-tuning (:func:`~hebbopt.training.finetune.finetune`).

    The defaults are the paper's (FastHebb §4.3).

    Args:
        regime: s, the percentage of the training set labelled, in (0, 100].
        balanced: a class-balanced labelled subset; false: a plain random one, as the paper.
        epochs: training epochs.
        batch_size: images per batch, per process.
        lr: the SGD learning rate.
        momentum: SGD momentum.
        nesterov: Nesterov momentum.
        weight_decay: SGD weight decay.
        dropout: the model's dropout rate (timm's ``drop_rate``), in [0, 1).
        lr_constant_epochs: epochs at ``lr`` before the first halving.
        lr_halve_every: epochs between halvings after that (see
            :func:`~hebbopt.training.sgd.step_lr`).
        optimizer: ``sgd`` (the paper's; ``momentum``, ``nesterov``) or ``adamw`` (torch's AdamW,
            default betas; ``weight_decay`` is its decoupled decay).
        schedule: ``step`` (the paper's: constant, then halved, see above) or ``cosine`` (cosine
            decay from ``lr`` to 0 over the epochs, per epoch).
        augment: random crops (zero padding of 4 pixels) and horizontal flips of the training
            images (:func:`~hebbopt.training.augment.crop_flip`); the paper fine-tunes without.
        head_norm: what the classifier sees: ``none`` (the features as they are) or ``l2`` (each
            image's features scaled to unit mean square, as ``probe.normalize: l2``); a model
            option, only for models that take it (the SoftHebb and AlexNet-like networks).
        val_every: evaluate on the validation split every this many epochs (and after the last);
            0: after the last epoch only. The kept model is the best evaluated epoch.
        lpft_lr: the ``lpft`` protocol's learning rate of its second phase (every layer, from the
            linear probe's head), usually well below ``lr``.
        lpft_epochs: the epochs of that second phase (at least 1).
        steps: 0, or the optimizer steps to train for instead of ``epochs``, rounded up to whole
            epochs (ceil(steps / batches per epoch)): the same budget of steps at every labelled
            share, so that 1 % trains for many epochs and 100 % for few.
        lpft_steps: 0, or the same for LP-FT's second phase instead of ``lpft_epochs``.
    """

    regime: float = 100.0
    balanced: bool = True
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-2
    dropout: float = 0.5
    lr_constant_epochs: int = 10
    lr_halve_every: int = 2
    optimizer: Literal["sgd", "adamw"] = "sgd"
    schedule: Literal["step", "cosine"] = "step"
    augment: bool = False
    head_norm: Literal["none", "l2"] = "none"
    val_every: int = 1
    lpft_lr: float = 1e-4
    lpft_epochs: int = 10
    steps: int = 0
    lpft_steps: int = 0


@dataclasses.dataclass
class SweepConfig:
    """Section ``sweep``: the semi-supervised sweep (:func:`~hebbopt.sweeps.semisup.semisup`).

    Args:
        methods: the pre-training methods compared (each one of :func:`methods`).
        regimes: the labelled percentages s fine-tuned on, each in (0, 100].
        seeds: one pre-training, labelled subset and initialisation per seed.
        pretrain_epochs: ``pretrain.epochs`` per method, e.g. ``{hpca: 12}`` (``hpca`` and ``swta``
            only); the others use ``pretrain.epochs``.
        protocols: how each backbone is evaluated on each regime (each one of :data:`PROTOCOLS`):
            ``finetune`` (every layer trained), ``linear`` (a linear probe on frozen features) or
            ``knn`` (k-nearest neighbours on them); the last two are set up by :class:`ProbeConfig`;
            ``lpft`` (the linear probe, then every layer from its head at ``finetune.lpft_lr``).
        settings: the grid of fine-tuning settings (``finetune`` and ``lpft``): a list of
            overrides, each ``{section: {key: value}}`` (e.g. ``{finetune: {lr: 1e-3}}``); every one
            is run for every seed, method and regime, and the table reports, per method, protocol
            and regime, the one with the best mean validation top-1 over the seeds (chosen on the
            validation split, never the test split). Empty: the configuration as it is. Probe keys
            of a setting tune LP-FT's first phase; the ``linear`` protocol runs once per regime with
            the ``probe`` section as configured (the sweep's log says so). An entry may name the
            starts it is tried for, ``methods: [none]`` beside its sections (e.g. a schedule only a
            random start needs); the others skip it and choose among the rest.
        only_settings: the indices of the ``sweep.settings`` this invocation runs (a record's
            ``setting``), e.g. ``[2]`` to run on a second seed only the setting chosen on the
            first, or a long setting for one start alone; the other settings' cells are left out of
            its table (their records stay in ``records``). Default (None): every setting.
        tune_seeds: the seeds on which every setting of ``sweep.settings`` runs (e.g. ``[0]``); each
            other seed of ``sweep.seeds`` runs, per method, protocol and regime, only the setting
            with the best validation score on these seeds
            (:func:`~hebbopt.evaluation.report.choose`), so that a grid chosen on seed 0 and
            repeated on seed 1 is one command. The tuning seeds run first. Default (None): every
            seed runs every setting.
        retry_diverged: a resumed sweep runs again the cells that diverged (default: it keeps their
            ``diverged`` records; may change on resume).
        records: a file that keeps every finished cell's record (e.g. ``docs/results/<name>/results.json``,
            committed as cells finish); a sweep skips the cells it holds, also in an empty run folder
            on another machine (:mod:`hebbopt.sweeps.records`); may change on resume.
    """

    methods: list = dataclasses.field(default_factory=lambda: ["hpca", "swta", "vae", "none"])
    regimes: list = dataclasses.field(default_factory=lambda: [1, 2, 3, 4, 5, 10, 25, 100])
    seeds: list = dataclasses.field(default_factory=lambda: [0, 1, 2])
    pretrain_epochs: dict = dataclasses.field(default_factory=dict)
    protocols: list = dataclasses.field(default_factory=lambda: ["finetune"])
    settings: list = dataclasses.field(default_factory=list)
    only_settings: list | None = None
    tune_seeds: list | None = None
    retry_diverged: bool = False
    records: str | None = None


PROTOCOLS = ("finetune", "lpft", "linear", "knn")
"""Evaluation protocols of the sweep (``sweep.protocols``): fine-tuning, a linear probe, k-nearest
neighbours (see :mod:`hebbopt.evaluation`)."""
TUNED_PROTOCOLS = ("finetune", "lpft")
"""The protocols whose cells ``sweep.settings`` vary (one cell per setting); the others run once."""


@dataclasses.dataclass
class ProbeConfig:
    """Section ``probe``: the frozen-backbone protocols ``linear`` and ``knn`` of the sweep.

    The features are the backbone's, computed once per method and seed (see
    :func:`~hebbopt.evaluation.features.extract_features`); the linear probe follows SoftHebb
    (:func:`~hebbopt.evaluation.linear.linear_probe`).

    Args:
        epochs: linear-probe epochs.
        batch_size: linear-probe batch size.
        lr: the linear probe's Adam learning rate (halved at 20, 35, 50, 60, 70, 80, 90 % of the epochs).
        dropout: dropout on the features before the linear layer, in [0, 1).
        normalize: the linear probe's feature scaling (:func:`~hebbopt.evaluation.linear.feature_scaler`):
            ``none`` (SoftHebb's probe), ``standardize`` (per feature, over the labelled training
            features) or ``l2`` (per image).
        flip: train the linear probe with random horizontal flips: the features of the mirrored
            labelled images are computed too, and each sample of each epoch is one or the other
            (SoftHebb's probe: off). ``knn`` does not use them.
        knn_k: the neighbours that vote in ``knn``; a list evaluates each k, and with a validation
            split (``data.val_size``) the k with the best validation top-1 is reported (else the first).
        features: ``pre_logits`` (what the classifier sees: timm's ``forward_head(..., pre_logits=True)``)
            or ``map`` (the last feature map, ``forward_features``, flattened).
        retrieval_ks: the k of the retrieval precision@k recorded beside ``knn`` (with mAP); an empty
            list: no retrieval.
        calibrate_norm: a random start (``pretrain.method: none``) gets its BatchNorm running
            statistics from one pass over the training images (weights unchanged,
            :func:`~hebbopt.evaluation.features.estimate_norm_statistics`) before its features are taken,
            as a Hebbian backbone gets them from its pre-training's forward passes. Deep networks of
            SoftHebb blocks (``hebb_vgg11`` with ``block: softhebb``) need it: with the untouched
            statistics their activations grow by orders of magnitude at each layer.
    """

    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    dropout: float = 0.5
    normalize: Literal["none", "standardize", "l2"] = "none"
    flip: bool = False
    knn_k: int | list = 20
    features: Literal["pre_logits", "map"] = "pre_logits"
    retrieval_ks: list = dataclasses.field(default_factory=lambda: [10, 50, 100])
    calibrate_norm: bool = False


@dataclasses.dataclass
class RunConfig:
    """Section ``run``: where a run writes, and how it runs.

    Args:
        dir: the run folder: resolved configuration, log, checkpoints, metrics, weights.
        seed: seeds the initialisation, the batch order and the labelled subset.
        mixed_precision: ``no``, ``bf16`` or ``fp16`` (accelerate's autocast), or ``auto``: bf16
            where the device has bf16 units (a GPU that supports it, a CPU with AVX-512 BF16 or
            AMX), else ``no``; resolved when the configuration is read, so that a run folder and a
            record hold what ran (see :mod:`hebbopt.training.precision`).
        cpu: run on the CPU even when a GPU is present.
        threads: torch CPU threads (0: torch's default).
        progress: progress bars (main process only).
        log_with: experiment trackers, as accelerate's ``log_with``: ``none`` (default), a name
            (``tensorboard``, ``wandb``, ``mlflow``, ``comet_ml``, ``aim``, ``clearml``, ``dvclive``,
            ``swanlab``, ``trackio``, ``all``) or a list of names (see
            :mod:`hebbopt.training.tracking`); TensorBoard writes into ``dir``.
        log_every: per-step values (losses, Hebbian diagnostics) are logged every this many steps.
        checkpoint_every: fine-tuning writes ``checkpoint.pt`` every this many epochs and after the
            last (a resumed run repeats at most this many epochs, exactly: every epoch draws from
            its own named random streams); raise it where an epoch is shorter than writing the file.
    """

    dir: str = "runs/default"
    seed: int = 0
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"
    cpu: bool = False
    threads: int = 0
    progress: bool = True
    log_with: str | list | None = None
    log_every: int = 50
    checkpoint_every: int = 1


SECTIONS: dict[str, type] = {
    "data": DataConfig, "model": ModelConfig, "pretrain": PretrainConfig, "vae": VAEConfig,
    "finetune": FinetuneConfig, "sweep": SweepConfig, "probe": ProbeConfig, "run": RunConfig,
}  # fmt: skip
"""Each section's name in a configuration, and its dataclass."""


def section_fields(section: str) -> dict[str, dataclasses.Field]:
    """The keys of a section, with their types and defaults.

    Args:
        section: a section's name.

    Returns:
        ``{key: dataclasses.Field}``.

    Raises:
        ConfigError: no such section (the sections are named).
    """
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section {section!r}: choose one of {sorted(SECTIONS)}")
    return {f.name: f for f in dataclasses.fields(SECTIONS[section])}


def unknown_key(key: str) -> ConfigError:
    """The error for ``section.key`` that the configuration does not have.

    Args:
        key: ``section.key`` as written.

    Returns:
        The :class:`ConfigError` naming the section's keys (or the sections).
    """
    try:
        fields = section_fields(key.partition(".")[0])
    except ConfigError as e:
        return e
    return ConfigError(f"unknown config key {key}: valid keys are {sorted(fields)}")
