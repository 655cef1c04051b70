"""What types cannot check in a recipe's configuration: names, ranges, data folders, the grid of
fine-tuning settings. :func:`validate` runs whenever a configuration is built
(:mod:`hebbopt.training.config`), before any data is read or any weight trained.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from hebbopt.data.datasets import check_source
from hebbopt.rules import RULES
from hebbopt.training.sections import (
    PROTOCOLS,
    TUNED_PROTOCOLS,
    ConfigError,
    methods,
    section_fields,
    unknown_key,
)

if TYPE_CHECKING:
    from hebbopt.training.config import Config


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
        if not isinstance(setting, dict):
            raise ConfigError(f"sweep.settings[{i}] must map sections to {{key: value}}, got {setting!r}")
        _check_setting_methods(i, setting)
        setting = setting_overrides(setting)
        if not all(isinstance(v, dict) for v in setting.values()):
            raise ConfigError(f"sweep.settings[{i}] must map sections to {{key: value}}, got {setting!r}")
        bad = [s for s in setting if s not in ("finetune", "probe")]
        if bad:
            raise ConfigError(
                f"sweep.settings[{i}]: only finetune and probe keys vary (and `{SETTING_METHODS}`: the "
                f"starts it is tried for), got {bad[0]!r}"
            )
        for section, values in setting.items():
            fields = section_fields(section)
            for key in values:
                if key not in fields:
                    raise unknown_key(f"{section}.{key}")
                if section == "finetune" and key == "regime":
                    raise ConfigError(f"sweep.settings[{i}]: finetune.regime is set by sweep.regimes")
                if section == "probe" and key not in TUNABLE_PROBE:
                    raise ConfigError(
                        f"sweep.settings[{i}]: probe.{key} changes the shared features; the grid may vary "
                        f"probe.{', probe.'.join(TUNABLE_PROBE)}"
                    )
                _check_setting_type(i, f"{section}.{key}", fields[key].default, values[key])
        if setting in (earlier := [setting_overrides(e) for e in settings[:i]]):
            raise ConfigError(
                f"sweep.settings[{i}] repeats sweep.settings[{earlier.index(setting)}]: {setting} (a "
                f"setting is tried once; `{SETTING_METHODS}` names the starts it is tried for)"
            )
        try:  # every value checked as the run will read it (the grid itself left out)
            cfg.replace(sweep={"settings": [], "only_settings": None, "tune_seeds": None}, **setting)
        except ConfigError as e:
            raise ConfigError(f"sweep.settings[{i}]: {e}") from None
    only = cfg.sweep.only_settings
    if only is not None:
        ints = isinstance(only, list) and all(isinstance(k, int) and not isinstance(k, bool) for k in only)
        if not settings or not ints or not only or len(set(only)) < len(only) or min(only) < 0:
            raise ConfigError(
                "sweep.only_settings must be distinct indices (>= 0) of a non-empty sweep.settings, e.g. "
                f"--sweep.only_settings '[2]', or null for every setting; got {only!r} with "
                f"{len(settings)} settings"
            )
        tried = [settings[k] for k in only if k < len(settings)]  # (a larger index: refused by the sweep)
        idle = [m for m in cfg.sweep.methods if not any(setting_tried_for(s, m) for s in tried)]
        if tried and idle and set(cfg.sweep.protocols) <= set(TUNED_PROTOCOLS):
            raise ConfigError(
                f"sweep.only_settings {only}: no listed setting is tried for {idle} (each setting's "
                f"`{SETTING_METHODS}`), and the protocols {list(cfg.sweep.protocols)} have no cell without "
                f"a setting, so {idle} would pre-train and run nothing: drop {idle} from sweep.methods, or "
                "list a setting tried for them"
            )
    tune = cfg.sweep.tune_seeds
    if tune is not None:
        seeds = list(cfg.sweep.seeds)
        listed = isinstance(tune, list) and tune and all(not isinstance(s, bool) and s in seeds for s in tune)
        if not settings or not listed:
            raise ConfigError(
                "sweep.tune_seeds must be a non-empty list of seeds of sweep.seeds, with a non-empty "
                f"sweep.settings to choose from; got {tune!r} with seeds {seeds} and {len(settings)} "
                "settings. To run other seeds at the chosen settings, list the tuning seeds too (e.g. "
                "--sweep.seeds '[0, 1]': their cells held in sweep.records do not run again), or pass "
                "--sweep.tune_seeds null to run every setting"
            )
        others = [s for s in seeds if s not in tune]
        if only is not None and others:  # on the tuning seeds alone, tune_seeds chooses nothing
            raise ConfigError(
                "sweep.tune_seeds chooses each other seed's setting on the tuning seeds' whole grid, so it "
                f"cannot run with sweep.only_settings ({only}) while sweep.seeds holds other seeds "
                f"({others}): run the tuning seeds' parts first (--sweep.seeds '{list(tune)}', "
                "sweep.records keeping their cells), then the sweep with tune_seeds and without "
                "only_settings"
            )


SETTING_METHODS = "methods"
"""The key of a ``sweep.settings`` entry that names the starts (``sweep.methods``) it is tried for,
e.g. ``{finetune: {steps: 9600}, methods: [none]}``: a schedule only a random start needs. Without
it, every start tries the setting."""


def setting_overrides(setting: dict) -> dict:
    """A ``sweep.settings`` entry as configuration overrides, without :data:`SETTING_METHODS`.

    Args:
        setting: one entry of ``sweep.settings``.

    Returns:
        ``{section: {key: value}}``, what ``Config.replace`` takes.

    Examples:
        >>> setting_overrides({"finetune": {"steps": 9600}, "methods": ["none"]})
        {'finetune': {'steps': 9600}}
    """
    return {k: v for k, v in setting.items() if k != SETTING_METHODS}


def setting_tried_for(setting: dict, method: str) -> bool:
    """Whether a ``sweep.settings`` entry is tried for a start.

    Args:
        setting: one entry of ``sweep.settings``.
        method: the start (an entry of ``sweep.methods``).

    Returns:
        ``True`` if the entry's :data:`SETTING_METHODS` name the start, or it has none.

    Examples:
        >>> setting_tried_for({"finetune": {"steps": 9600}, "methods": ["none"]}, "softhebb")
        False
    """
    return method in setting.get(SETTING_METHODS, [method])


def _check_setting_methods(i: int, setting: dict) -> None:
    if SETTING_METHODS not in setting:
        return
    starts = setting[SETTING_METHODS]
    named = isinstance(starts, list) and starts and all(isinstance(m, str) for m in starts)
    if not named or len(set(starts)) < len(starts) or any(m not in methods() for m in starts):
        raise ConfigError(
            f"sweep.settings[{i}].{SETTING_METHODS} must be a non-empty list of distinct methods (the "
            f"starts the setting is tried for, from {methods()}), got {starts!r}; leave it out to try "
            "the setting for every start"
        )


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
