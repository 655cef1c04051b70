"""Command lines of the recipes: ``--config FILE``, ``--resume``, then ``--section.key value`` overrides.

Each ``recipes/<name>.py`` script calls one of these with the process's arguments:

| script | function | runs |
|---|---|---|
| ``recipes/pretrain.py`` | :data:`pretrain_main` | :func:`~hebbopt.training.pretrain.pretrain` |
| ``recipes/finetune.py`` | :data:`finetune_main` | :func:`~hebbopt.training.finetune.finetune` |
| ``recipes/vae.py`` | :data:`vae_main` | :func:`~hebbopt.training.vae.pretrain_vae` |
| ``recipes/semisup.py`` | :data:`semisup_main` | :func:`~hebbopt.sweeps.semisup.semisup` |

The command line is parsed by :func:`~hebbopt.training.config.make_parser` (jsonargparse):
``--config FILE`` and ``--section.key value`` overrides, read as in
:func:`~hebbopt.training.config.load`; ``--help`` lists every key with its type and default.

A configuration that cannot run (an unknown or abbreviated key, a config file that repeats a key
or gives a section a value that is not a mapping, an empty sweep list, a missing data folder, a run
folder already taken, or in use by another run (``run.lock``, see
:class:`~hebbopt.training.run_folder.Run`), a model timm cannot build, unknown or null
``model.kwargs``, ``pretrain.include`` or ``pretrain.exclude`` patterns that match no layer of the
model, ``--resume`` of a folder that holds no run) ends the command with exit status 2 and a
one-line message, not a traceback, before any folder is made or data read. A damaged file
(:class:`~hebbopt.files.CorruptFileError`, an edited ``metrics.json`` included), a non-finite loss
or a failed write (a full disk) ends it with exit status 1 and a message naming the file or run.
"""

from __future__ import annotations

import ctypes
import functools
import os
import pathlib
import sys

import torch

from hebbopt.files import CorruptFileError
from hebbopt.training.config import ConfigError, make_parser, parse_args
from hebbopt.training.folder_lock import release_locks
from hebbopt.training.run_folder import resume_problem


def _fail(message: str) -> None:
    """End the command as argparse does on a bad option: the message, exit status 2."""
    print(f"error: {message}\n(--help lists every option and configuration key)", file=sys.stderr)
    raise SystemExit(2)


def _parse(description: str, argv: list[str] | None, extra=None, kind: str = "finetune"):
    parser = make_parser(description)
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in run.dir from its last checkpoint"
    )
    if extra:
        extra(parser)
    try:
        args, cfg = parse_args(parser, argv)
        from hebbopt.training.models import check_layer_patterns, check_model_kwargs

        check_model_kwargs(cfg)
        check_layer_patterns(cfg)
    except ConfigError as e:
        _fail(str(e))
    if args.resume and (problem := resume_problem(pathlib.Path(cfg.run.dir).expanduser(), kind)):
        _fail(problem)
    return args, cfg


MALLOC_OPTIONS = {-3: 1 << 30, -1: 1 << 31}
"""glibc ``mallopt`` settings of a recipe process: ``M_MMAP_THRESHOLD`` (-3) 1 GiB, so that blocks
above glibc's 32 MiB cap come from the heap, and ``M_TRIM_THRESHOLD`` (-1) 2 GiB, so that freed
memory stays in the process."""


def keep_freed_memory() -> bool:
    """Keep freed memory in the process for the next batch (glibc on Linux; elsewhere nothing).

    By default glibc maps every block above 32 MiB afresh and unmaps it when freed, so a tensor of
    that size (a 256-image batch's feature maps, ~100 MB) is faulted in page by page at every batch:
    on the 2-core VM here a ReLU over 100 MB took 30.8 ms so, 6.8 ms with these settings (400 MB:
    131 → 28 ms). A training process reuses the same sizes batch after batch, so the recipes keep
    them; the process's resident memory then stays at its peak. ``HEBBOPT_MALLOC=system`` leaves
    the allocator as it is.

    Returns:
        Whether the settings were applied.
    """
    if os.environ.get("HEBBOPT_MALLOC") == "system" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(option, value) == 1 for option, value in MALLOC_OPTIONS.items())
    except (OSError, AttributeError):  # not glibc
        return False


def _clear_errors(main):
    """Configuration problems found while starting (run folder taken, model cannot be built) end
    the command with the message, not a traceback; Ctrl-C ends it with one line saying that
    ``--resume`` continues it (exit status 130). The run folders the command holds are released
    (their ``run.lock`` deleted) however it ends. The process group of a multi-process run is
    torn down before the interpreter exits (gloo's threads otherwise can abort a rank at exit)."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        keep_freed_memory()
        try:
            return main(argv)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (CorruptFileError, FloatingPointError, OSError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(
                "interrupted: run the same command with --resume to continue from the last checkpoint",
                file=sys.stderr,
            )
            return 130
        finally:
            release_locks()  # the command's run folders, whether it ended well or not
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()

    return wrapped


@_clear_errors
def pretrain_main(argv: list[str] | None = None) -> int:
    """``recipes/pretrain.py``: unsupervised pre-training (a Hebbian rule of
    :data:`hebbopt.rules.RULES`, or ``vae``) of the configured model.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 on a configuration error.

    Raises:
        ConfigError: ``pretrain.method`` is ``none`` (turned into exit status 2, like every
            configuration error).
    """
    from hebbopt.rules import RULES
    from hebbopt.training.pretrain import pretrain

    rules = ", ".join(RULES)
    args, cfg = _parse(f"Unsupervised pre-training of a timm backbone: a rule ({rules}), or vae.", argv)
    if cfg.pretrain.method == "none":
        raise ConfigError(f"pretrain.method none: nothing to pre-train; choose a rule ({rules}) or vae")
    path = pretrain(cfg, resume=args.resume)
    print(f"backbone: {path}")
    return 0


@_clear_errors
def finetune_main(argv: list[str] | None = None) -> int:
    """``recipes/finetune.py``: supervised fine-tuning, from ``--backbone FILE`` if given.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 on a configuration error.
    """
    from hebbopt.training.finetune import finetune

    def extra(p):
        p.add_argument(
            "--backbone",
            type=str | None,
            help="pre-trained backbone (.safetensors); default: random initialisation",
        )

    args, cfg = _parse("Supervised fine-tuning on the labelled share of the training set.", argv, extra)
    m = finetune(cfg, backbone=args.backbone, resume=args.resume)
    print(
        f"test top-1 {m['test']['top1']:.2f} %, top-5 {m['test']['top5']:.2f} % "
        f"({m['labelled']} labelled images)"
    )
    return 0


@_clear_errors
def vae_main(argv: list[str] | None = None) -> int:
    """``recipes/vae.py``: β-VAE pre-training of the configured model (``pretrain.method`` is set to vae).

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0, or 2 on a configuration error.
    """
    from hebbopt.training.config import Config

    args, cfg = _parse(
        "The VAE baseline: beta-VAE pre-training of the backbone (then run finetune.py).", argv
    )
    from hebbopt.training.vae import pretrain_vae

    assert isinstance(cfg, Config)
    path = pretrain_vae(cfg.replace(pretrain={"method": "vae"}), resume=args.resume)
    print(f"backbone: {path}")
    return 0


@_clear_errors
def semisup_main(argv: list[str] | None = None) -> int:
    """``recipes/semisup.py``: the semi-supervised sweep; prints the results table at the end.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0; 1 when a cell diverged (the sweep ran every other cell); 2 on a
        configuration error.
    """
    from hebbopt.evaluation.report import table
    from hebbopt.sweeps.semisup import semisup

    args, cfg = _parse(
        "The semi-supervised sweep: methods x regimes x seeds (the paper's Table 2).", argv, kind="semisup"
    )
    summary = semisup(cfg, resume=args.resume)
    print(
        table(summary["results"], summary["metric"], dataset=cfg.data.name, methods=list(cfg.sweep.methods))
    )
    diverged = [r for r in summary["results"] if "diverged" in r]
    if diverged:
        print(f"error: {len(diverged)} cell(s) diverged (listed under the table)", file=sys.stderr)
        return 1
    return 0
