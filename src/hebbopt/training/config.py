"""Recipe configuration: nested dataclasses, YAML files, ``--section.key value`` overrides.

Everything is checked when the configuration is built, before any data is read or any weight
trained: unknown sections or keys (options are never abbreviated), keys a YAML mapping repeats,
sections given a value that is not a mapping, wrong types, unknown datasets/methods, regimes
outside (0, 100], empty sweep lists and missing data folders raise :class:`ConfigError`, one line
that names the file or key and what to change.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import math
import pathlib
import re
import sys
import typing
from typing import Any, Literal

import jsonargparse
import yaml

from hebbopt.data.datasets import check_source
from hebbopt.rules import RESERVED, RULES
from hebbopt.training import precision


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
            the ``probe`` section as configured (the sweep's log says so).
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
    retry_diverged: bool = False
    records: str | None = None


PROTOCOLS = ("finetune", "lpft", "linear", "knn")
"""Evaluation protocols of the sweep (``sweep.protocols``): fine-tuning, a linear probe, k-nearest
neighbours (see :mod:`hebbopt.evaluation`)."""


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


@dataclasses.dataclass
class Config:
    """A recipe's whole configuration: one section per YAML mapping.

    Build it with :func:`load` (a YAML file, then overrides) or :func:`from_dict`, which check every
    value; the constructor itself checks nothing.

    Args:
        data: the dataset (:class:`DataConfig`).
        model: the network (:class:`ModelConfig`).
        pretrain: unsupervised pre-training (:class:`PretrainConfig`).
        vae: the β-VAE baseline (:class:`VAEConfig`).
        finetune: supervised fine-tuning (:class:`FinetuneConfig`).
        sweep: the semi-supervised sweep (:class:`SweepConfig`).
        probe: the linear-probe and kNN protocols (:class:`ProbeConfig`).
        run: the run folder, seed and devices (:class:`RunConfig`).

    Examples:
        >>> cfg = Config()
        >>> cfg.pretrain.method, cfg.pretrain.lr, cfg.finetune.epochs
        ('hpca', 0.001, 20)
        >>> cfg.replace(finetune={"regime": 5}).finetune.regime
        5.0
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    pretrain: PretrainConfig = dataclasses.field(default_factory=PretrainConfig)
    vae: VAEConfig = dataclasses.field(default_factory=VAEConfig)
    finetune: FinetuneConfig = dataclasses.field(default_factory=FinetuneConfig)
    sweep: SweepConfig = dataclasses.field(default_factory=SweepConfig)
    probe: ProbeConfig = dataclasses.field(default_factory=ProbeConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, Any]:
        """The configuration as nested dicts, ``{section: {key: value}}``.

        Returns:
            A deep copy, as :func:`from_dict` takes it and :func:`dump` writes it.
        """
        return dataclasses.asdict(self)

    def replace(self, **sections: dict[str, Any]) -> Config:
        """A copy with some keys changed, e.g. ``cfg.replace(finetune={"regime": 5})``.

        Args:
            **sections: ``section={key: value}`` for each section with keys to change; the other
                keys keep their values.

        Returns:
            The new configuration, checked as :func:`from_dict` checks it.

        Raises:
            ConfigError: an unknown section or key, or a value that does not check.
        """
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


# Parsing, types and --help are jsonargparse's: the YAML file (--config), the --section.key value
# overrides (values read as YAML) and each key's type from the dataclasses above. Ours: the messages
# of its errors, and the checks of validate().

_JSONARGPARSE_YAML = jsonargparse.get_loader("yaml")
_MODE = "hebbopt_yaml"


class _DuplicateKey(yaml.YAMLError):
    """A YAML mapping that repeats a key (PyYAML silently keeps the last value)."""


def _check_keys(text: str) -> None:
    """Raise :class:`_DuplicateKey` naming the first repeated key (as ``section.key``) and its lines."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return  # a syntax error: the loader reports it
    seen_nodes: set[int] = set()

    def walk(node, path: str) -> None:
        if id(node) in seen_nodes:  # an alias (possibly recursive): checked where it is anchored
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else str(key.value)
                where = f"{path}.{name}" if path else name
                line = key.start_mark.line + 1
                if name in lines and name != "<<":
                    raise _DuplicateKey(
                        f"duplicate key {where} (first at line {lines[name]}, again at line {line}): a key "
                        "may appear once (YAML would keep the last silently); keep one"
                    )
                lines[name] = line
                walk(value, where)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, f"{path}[{i}]")

    walk(root, "")


def _yaml(stream: str) -> Any:
    """jsonargparse's YAML loader, except that a mapping that repeats a key is refused
    (:class:`_DuplicateKey`), and a flow mapping whose values are all null is read as YAML reads it
    rather than kept as text: ``{width:0.5}`` (no space after the colon) is the key ``width:0.5``
    with no value, which the model check names."""
    _check_keys(stream)
    value = _JSONARGPARSE_YAML(stream)
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            return yaml.safe_load(value)
        except yaml.YAMLError:
            pass
    return value


jsonargparse.set_loader(_MODE, _yaml, (yaml.YAMLError,))


def make_parser(description: str | None = None) -> jsonargparse.ArgumentParser:
    """The command-line parser of a configuration: ``--config FILE``, then ``--section.key value``.

    A jsonargparse parser with one group per section of :class:`Config`; its ``--help`` lists every
    key with its type and default. Options are never abbreviated (``--run.se 3`` is an unknown key,
    not ``--run.seed 3``). Parse with :func:`parse_args`; a recipe adds its own options
    (``--resume``, ``--backbone``) first.

    Args:
        description: the text ``--help`` starts with.

    Returns:
        A new parser that raises (rather than exits) on errors.
    """
    listed = ", ".join(methods())  # from the registry, never a hand list
    parser = jsonargparse.ArgumentParser(
        description=description,
        parser_mode=_MODE,
        exit_on_error=False,
        default_env=False,
        allow_abbrev=False,
        epilog=f"pretrain.method and sweep.methods take: {listed} (the rules of hebbopt.rules.RULES, "
        "the β-VAE baseline, no pre-training)",
    )
    parser.add_argument(
        "--config",
        action=jsonargparse.ActionConfigFile,
        help="YAML configuration (sections data, model, pretrain, vae, finetune, sweep, probe, run); "
        "--section.key value options after it override its keys (values are YAML: [0, 1], {width: 0.5})",
    )
    for field in dataclasses.fields(Config):
        section = field.default_factory
        title = (section.__doc__ or field.name).strip().splitlines()[0]  # type: ignore[union-attr]
        title = re.sub(r":\w+:`~?(?:[\w.]*\.)?([^`]+)`", r"\1", title).replace("``", "")  # plain text
        parser.add_class_arguments(section, field.name, help=title)  # type: ignore[arg-type]
    return parser


@functools.lru_cache(maxsize=1)
def _parser() -> jsonargparse.ArgumentParser:
    return make_parser()


def parse_args(
    parser: jsonargparse.ArgumentParser, argv: list[str] | None = None
) -> tuple[jsonargparse.Namespace, Config]:
    """Parse a command line with a parser of :func:`make_parser`, and check the configuration.

    Args:
        parser: the parser, possibly with options of its own.
        argv: the words (default: ``sys.argv[1:]``).

    Returns:
        The parsed namespace (the parser's own options are its attributes) and the configuration,
        checked by :func:`validate`.

    Raises:
        ConfigError: a missing or malformed file, a file that repeats a key or gives a section a
            value that is not a mapping, an unknown section or key (options are never abbreviated),
            a value of the wrong type, or a value that :func:`validate` refuses; the message names
            the file or the key.
    """
    words = _negative_values(list(sys.argv[1:] if argv is None else argv))
    for i, word in enumerate(words):
        if word == "--config" and i + 1 < len(words):
            _check_file(words[i + 1])
        elif word.startswith("--config="):
            _check_file(word.partition("=")[2])
    ns = _parsed(parser.parse_args, words)
    return ns, _config(parser, ns)


_NEGATIVE = re.compile(r"-(\d|\.\d|inf\b|nan\b)", re.IGNORECASE)


def _negative_values(words: list[str]) -> list[str]:
    """``--key -1e-4`` as ``--key=-1e-4``: argparse reads a word that starts with ``-`` as an
    option, so a negative number after a space would be "a missing argument" (and then not the
    message that says why the value is refused)."""
    out: list[str] = []
    for word in words:
        if out and out[-1].startswith("--") and "=" not in out[-1] and _NEGATIVE.match(word):
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


def _check_file(path: str) -> None:
    """What jsonargparse's messages would not name the file for: YAML syntax, repeated keys, and
    sections that are not mappings."""
    file = pathlib.Path(path)
    if not file.is_file():
        return  # jsonargparse names it (it may also be inline YAML)
    try:
        text = file.read_text()
        _check_keys(text)
        raw = yaml.safe_load(text)
    except _DuplicateKey as e:
        raise ConfigError(f"config file {path}: {e}") from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(
            f"config file {path}: not valid YAML ({e.problem or e.context}{where}); fix it"
        ) from None
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path}: cannot be read ({_one_line(str(e))})") from None
    if raw is None:
        return
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path}: a config file maps sections to mappings of keys, got a {type(raw).__name__}"
        )
    for section, values in raw.items():
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"config file {path}: {_not_a_mapping(section, values)}")


def _not_a_mapping(section: Any, value: Any) -> str:
    return (
        f"section {section} must be a mapping of its keys (in a file '{section}:' then indented "
        f"'key: value' lines; on the command line --{section}.key value), got {value!r}"
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _parsed(parse, arg):
    try:
        return parse(arg)
    except jsonargparse.ArgumentError as e:
        raise _config_error(str(e)) from None


def _config(parser: jsonargparse.ArgumentParser, ns: jsonargparse.Namespace) -> Config:
    for field in dataclasses.fields(Config):
        value = ns.get(field.name)
        if value is None:  # a null section in a file: all its defaults
            ns[field.name] = parser.get_defaults()[field.name]
        elif not isinstance(value, jsonargparse.Namespace):  # jsonargparse would raise a TypeError
            raise ConfigError(_not_a_mapping(field.name, value))
    init = parser.instantiate(ns)
    cfg = Config(**{f.name: init[f.name] for f in dataclasses.fields(Config)})
    validate(cfg)
    if cfg.run.mixed_precision == "auto":  # what runs here: the run folder and records hold it
        cfg.run.mixed_precision = precision.resolve("auto", cfg.run.cpu)
    return cfg


def _unknown(key: str) -> ConfigError:
    try:
        fields = _section_fields(key.partition(".")[0])
    except ConfigError as e:
        return e
    return ConfigError(f"unknown config key {key}: valid keys are {sorted(fields)}")


def _config_error(message: str) -> ConfigError:
    """jsonargparse's error as a :class:`ConfigError` naming the key and what it takes."""
    if m := re.search(r"duplicate key (\S+) (\(first at line.*)", message, re.S):
        where = re.match(r'(?:Parser key "([^"]+)"|([\w.]+): Unable to load)', message)
        prefix = next((g for g in where.groups() if g), None) if where else None
        key = f"{prefix}.{m.group(1)}" if prefix and prefix != "config" else m.group(1)
        return ConfigError(f"duplicate key {key} {_one_line(m.group(2))}")
    if m := re.match(r'Parser key "([^"]+)":\s*(.*)', message, re.S):
        key, detail = m.groups()
        section, _, name = key.partition(".")
        if not name and section in {f.name for f in dataclasses.fields(Config)}:
            got = re.search(r"Unable to load config [\'\"](.*?)[\'\"]\s*$", detail.splitlines()[0])
            return ConfigError(_not_a_mapping(section, got.group(1) if got else _one_line(detail)))
        try:
            hint = str(_section_fields(section)[name].type)
        except (ConfigError, KeyError):
            return ConfigError(f"{'--config' if key == 'config' else key}: {detail.strip()}")
        allowed = hint.replace("typing.Any", "any YAML value").replace(" | ", " or ").replace("None", "null")
        got = re.search(r"(?:Given|Got) value: (.*)", detail)
        try:
            _check_keys(got.group(1) if got else "")
        except _DuplicateKey as e:
            return ConfigError(f"{key}: {e}")
        value = got.group(1).strip() if got else detail.strip()
        if choices := re.fullmatch(r"(?:typing\.)?Literal\[(.*)\]", hint):
            allowed, value = f"one of {', '.join(ast.literal_eval(f'({choices.group(1)},)'))}", repr(value)
        return ConfigError(f"{key} must be {allowed}, got {value}")
    if m := re.match(r"unrecognized arguments: (.*)", message, re.S):
        word = m.group(1).split()[0]
        if not word.startswith("--"):
            return ConfigError(f"override {word!r}: use --section.key value, e.g. --finetune.epochs 5")
        option = word.partition("=")[0]
        if "." not in option:
            return ConfigError(
                f"unknown option {option}: options are spelled out in full (--help lists them)"
            )
        return _unknown(option[2:])
    if m := re.search(r"Group '([^']+)' does not accept option '([^']+)'", message):
        return _unknown(f"{m.group(1)}.{m.group(2)}")
    if m := re.search(r"Option '([^']+)' is not accepted", message):
        return _unknown(m.group(1))
    if message.startswith("Unexpected config"):
        return ConfigError(f"{message.strip()}: a config file maps sections to mappings of keys")
    return ConfigError(message)


def from_dict(raw: dict[str, Any]) -> Config:
    """Build and check a :class:`Config` from nested dicts.

    Args:
        raw: ``{section: {key: value}}``, as read from YAML; missing sections and keys take their
            defaults, ``None`` for a section means all defaults.

    Returns:
        The configuration, checked by :func:`validate`.

    Raises:
        ConfigError: ``raw`` or a section is not a mapping, an unknown section or key, a value of the
            wrong type, or a value that :func:`validate` refuses.
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"a config is a mapping of sections, got {type(raw).__name__}")
    sections = {}
    for section, values in raw.items():
        _section_fields(section)
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        sections[section] = values or {}
    parser = _parser()
    return _config(parser, _parsed(parser.parse_object, sections))


def _regime(where: str, s: Any) -> None:
    if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s) or not 0 < s <= 100:
        raise ConfigError(f"{where} must be a percentage in (0, 100], got {s!r}")


def validate(cfg: Config) -> None:
    """Check what types cannot: names, ranges, data folders.

    Args:
        cfg: the configuration to check.

    Raises:
        ConfigError: the first value that cannot run, e.g. an unknown method or dataset, a regime
            outside (0, 100], an empty ``sweep.methods``, ``sweep.regimes`` or ``sweep.seeds`` (a
            sweep of nothing), a missing data folder, or a learning rate that is not > 0.
    """
    try:
        check_source(cfg.data.name, cfg.data.root, cfg.data.download)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    for method in [cfg.pretrain.method, *cfg.sweep.methods]:
        if method not in methods():
            raise ConfigError(f"unknown method {method!r}: choose from {methods()}")
    _regime("finetune.regime", cfg.finetune.regime)
    for s in cfg.sweep.regimes:
        _regime("every sweep.regimes entry", s)
    for method, epochs in cfg.sweep.pretrain_epochs.items():
        if method not in RULES or isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ConfigError(
                f"sweep.pretrain_epochs maps Hebbian rules to epochs >= 0, got {method!r}: {epochs!r}"
            )
    for key, example in (("methods", "[hpca, none]"), ("regimes", "[1, 100]"), ("seeds", "[0]")):
        if not getattr(cfg.sweep, key):
            raise ConfigError(
                f"sweep.{key} is empty: the sweep would run nothing; list at least one, e.g. "
                f"--sweep.{key} '{example}'"
            )
    for seed in cfg.sweep.seeds:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"sweep.seeds must be integers, got {seed!r}")
    _check_probe(cfg)
    _check_log_with(cfg)
    _check_rule_kwargs(cfg.pretrain.rule_kwargs)
    if cfg.pretrain.compile not in (True, False, "auto"):
        raise ConfigError(f"pretrain.compile must be true, false or auto, got {cfg.pretrain.compile!r}")
    positive = {
        "pretrain.lr": cfg.pretrain.lr,
        "pretrain.batch_size": cfg.pretrain.batch_size,
        "vae.beta": cfg.vae.beta,
        "vae.latents": cfg.vae.latents,
        "vae.batch_size": cfg.vae.batch_size,
        "vae.lr": cfg.vae.lr,
        "finetune.batch_size": cfg.finetune.batch_size,
        "finetune.lr": cfg.finetune.lr,
        "finetune.lr_halve_every": cfg.finetune.lr_halve_every,
        "run.checkpoint_every": cfg.run.checkpoint_every,
    }
    for key, value in positive.items():
        if not (value > 0 and math.isfinite(value)):
            raise ConfigError(f"{key} must be a finite number > 0, got {value}")
    non_negative = {
        "pretrain.epochs": cfg.pretrain.epochs,
        "vae.epochs": cfg.vae.epochs,
        "finetune.epochs": cfg.finetune.epochs,
        "finetune.weight_decay": cfg.finetune.weight_decay,
        "finetune.lr_constant_epochs": cfg.finetune.lr_constant_epochs,
        "data.val_size": cfg.data.val_size,
        "run.threads": cfg.run.threads,
        "finetune.steps": cfg.finetune.steps,
        "finetune.lpft_steps": cfg.finetune.lpft_steps,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    if not 0 <= cfg.finetune.dropout < 1:
        raise ConfigError(f"finetune.dropout must be in [0, 1), got {cfg.finetune.dropout}")
    _check_finetune(cfg)


def _check_finetune(cfg: Config) -> None:
    f = cfg.finetune
    if f.val_every < 0:
        raise ConfigError(f"finetune.val_every must be >= 0 (0: the last epoch only), got {f.val_every}")
    if not (f.lpft_lr > 0 and math.isfinite(f.lpft_lr)) or f.lpft_epochs < 1:
        raise ConfigError(
            f"finetune.lpft_lr must be a finite number > 0 and finetune.lpft_epochs >= 1 (the second phase "
            f"trains every layer), got {f.lpft_lr}, {f.lpft_epochs}"
        )
    if "lpft" in cfg.sweep.protocols:
        if cfg.probe.epochs < 1:
            raise ConfigError(
                "sweep.protocols has lpft: probe.epochs must be >= 1 (LP-FT starts from a trained probe's "
                "head; with none it would be plain fine-tuning: use the finetune protocol)"
            )
        if cfg.probe.normalize != f.head_norm:
            raise ConfigError(
                f"sweep.protocols has lpft: probe.normalize ({cfg.probe.normalize!r}) must equal "
                f"finetune.head_norm ({f.head_norm!r}): the probe's head must see what it sees in the model"
            )
        if f.lpft_steps == 0 and 4 * f.lpft_epochs < cfg.probe.epochs + f.lpft_epochs:
            raise ConfigError(
                f"finetune.lpft_epochs ({f.lpft_epochs}) must be at least a quarter of lpft's epochs "
                f"(probe.epochs {cfg.probe.epochs} + lpft_epochs): lpft trains every layer for real"
            )
    _check_settings(cfg)


def _check_settings(cfg: Config) -> None:
    settings = cfg.sweep.settings
    if not isinstance(settings, list):
        raise ConfigError(f"sweep.settings must be a list of {{section: {{key: value}}}}, got {settings!r}")
    for i, setting in enumerate(settings):
        if not isinstance(setting, dict) or not all(isinstance(v, dict) for v in setting.values()):
            raise ConfigError(f"sweep.settings[{i}] must map sections to {{key: value}}, got {setting!r}")
        bad = [s for s in setting if s not in ("finetune", "probe")]
        if bad:
            raise ConfigError(f"sweep.settings[{i}]: only finetune and probe keys vary, got {bad[0]!r}")
        for section, values in setting.items():
            fields = _section_fields(section)
            for key in values:
                if key not in fields:
                    raise _unknown(f"{section}.{key}")
                if section == "finetune" and key == "regime":
                    raise ConfigError(f"sweep.settings[{i}]: finetune.regime is set by sweep.regimes")
                if section == "probe" and key not in TUNABLE_PROBE:
                    raise ConfigError(
                        f"sweep.settings[{i}]: probe.{key} changes the shared features; the grid may vary "
                        f"probe.{', probe.'.join(TUNABLE_PROBE)}"
                    )
                _check_setting_type(i, f"{section}.{key}", fields[key].default, values[key])
        if setting in settings[:i]:
            raise ConfigError(
                f"sweep.settings[{i}] repeats sweep.settings[{settings.index(setting)}]: {setting}"
            )
        try:  # every value checked as the run will read it (the grid itself left out)
            cfg.replace(sweep={"settings": []}, **setting)
        except ConfigError as e:
            raise ConfigError(f"sweep.settings[{i}]: {e}") from None


def _check_setting_type(i: int, key: str, default: Any, value: Any) -> None:
    """A setting's value of the type of its key (as the command line would read it), else named."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {
        bool: isinstance(value, bool),
        int: number and float(value).is_integer(),
        float: number,
        str: isinstance(value, str),
    }.get(type(default), True)
    if not ok:
        raise ConfigError(
            f"sweep.settings[{i}]: {key} must be {type(default).__name__} (like its default {default!r}), "
            f"got {value!r}"
        )


TUNABLE_PROBE = ("epochs", "batch_size", "lr", "dropout", "normalize")
"""The probe keys ``sweep.settings`` may vary (the others change the features every run shares)."""


def _check_log_with(cfg: Config) -> None:
    from accelerate.utils import LoggerType

    value = cfg.run.log_with
    names = [value] if isinstance(value, str) else list(value or [])
    known = [*LoggerType.list(), "none"]
    bad = [n for n in names if not isinstance(n, str) or n.lower() not in known]
    if bad:
        raise ConfigError(f"run.log_with: unknown tracker {bad[0]!r}: choose from {known}, or a list of them")
    if cfg.run.log_every < 1:
        raise ConfigError(f"run.log_every must be >= 1 (steps), got {cfg.run.log_every}")


def _check_rule_kwargs(rule_kwargs: Any) -> None:
    if not isinstance(rule_kwargs, dict):
        raise ConfigError(f"pretrain.rule_kwargs maps rule names to settings, got {rule_kwargs!r}")
    for rule, kwargs in rule_kwargs.items():
        if rule not in RULES:
            raise ConfigError(f"pretrain.rule_kwargs: unknown rule {rule!r}: choose from {sorted(RULES)}")
        if not isinstance(kwargs, dict):
            raise ConfigError(f"pretrain.rule_kwargs.{rule} must be a mapping, got {kwargs!r}")
        try:
            RULES[rule].defaults(**kwargs)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"pretrain.rule_kwargs.{rule}: {e}") from None


def _check_probe(cfg: Config) -> None:
    if not cfg.sweep.protocols or any(p not in PROTOCOLS for p in cfg.sweep.protocols):
        raise ConfigError(f"sweep.protocols must list some of {PROTOCOLS}, got {cfg.sweep.protocols!r}")
    p = cfg.probe
    ks = p.knn_k if isinstance(p.knn_k, list) else [p.knn_k]
    if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
        raise ConfigError(f"probe.knn_k must be an integer >= 1 or a list of them, got {p.knn_k!r}")
    if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in p.retrieval_ks):
        raise ConfigError(f"probe.retrieval_ks must be integers >= 1, got {p.retrieval_ks!r}")
    if p.epochs < 0 or p.batch_size < 1 or not (p.lr > 0 and math.isfinite(p.lr)):
        raise ConfigError(
            f"probe.epochs must be >= 0, probe.batch_size >= 1 and probe.lr a finite number > 0, got "
            f"{p.epochs}, {p.batch_size}, {p.lr}"
        )
    if not 0 <= p.dropout < 1:
        raise ConfigError(f"probe.dropout must be in [0, 1), got {p.dropout}")


def load(path: str | pathlib.Path | None = None, overrides: list[str] | None = None) -> Config:
    """A YAML file (sections as in :class:`Config`), then ``--section.key value`` overrides.

    Args:
        path: the YAML file; None: start from the defaults.
        overrides: command-line words, ``--section.key value`` or ``--section.key=value``; values
            are parsed as YAML (``--sweep.seeds [0,1]``, ``--data.root null``).

    Returns:
        The configuration, checked as :func:`from_dict` checks it.

    Raises:
        ConfigError: a missing or malformed file, an override that is not ``--section.key value``,
            or anything :func:`from_dict` refuses.

    Examples:
        >>> cfg = load(None, ["--finetune.regime", "5", "--data.name", "synthetic"])
        >>> cfg.finetune.regime, cfg.data.name
        (5.0, 'synthetic')
    """
    args = []
    if path is not None:
        if not pathlib.Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist")
        args = ["--config", str(path)]
    return parse_args(_parser(), [*args, *(overrides or [])])[1]


def dump(cfg: Config) -> str:
    """The resolved configuration as YAML (what a run folder records as ``config.yaml``).

    Args:
        cfg: the configuration.

    Returns:
        YAML text, sections and keys in declaration order; :func:`load` reads it back.
    """
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
