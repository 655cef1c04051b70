"""Recipe configuration: :class:`Config` (one dataclass per section, :mod:`hebbopt.training.sections`),
read from YAML files and ``--section.key value`` overrides.

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
import pathlib
import re
import sys
from typing import Any

import jsonargparse
import yaml

from hebbopt.training import precision
from hebbopt.training.config_checks import validate
from hebbopt.training.sections import (
    PROTOCOLS,
    SECTIONS,
    ConfigError,
    DataConfig,
    FinetuneConfig,
    ModelConfig,
    PretrainConfig,
    ProbeConfig,
    RunConfig,
    SweepConfig,
    VAEConfig,
    methods,
    section_fields,
    unknown_key,
)

__all__ = [
    "PROTOCOLS", "SECTIONS", "Config", "ConfigError", "DataConfig", "FinetuneConfig", "ModelConfig",
    "PretrainConfig", "ProbeConfig", "RunConfig", "SweepConfig", "VAEConfig", "dump", "from_dict",
    "load", "make_parser", "methods", "parse_args", "validate",
]  # fmt: skip


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
            section_fields(section)
            raw[section].update(values)
        return from_dict(raw)


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
            hint = str(section_fields(section)[name].type)
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
        return unknown_key(option[2:])
    if m := re.search(r"Group '([^']+)' does not accept option '([^']+)'", message):
        return unknown_key(f"{m.group(1)}.{m.group(2)}")
    if m := re.search(r"Option '([^']+)' is not accepted", message):
        return unknown_key(m.group(1))
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
        section_fields(section)
        if values is not None and not isinstance(values, dict):
            raise ConfigError(f"config section {section!r} must be a mapping, got {values!r}")
        sections[section] = values or {}
    parser = _parser()
    return _config(parser, _parsed(parser.parse_object, sections))


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
