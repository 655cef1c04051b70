"""Command lines of the recipes: ``--config FILE``, ``--resume``, then ``--section.key value`` overrides."""

from __future__ import annotations

import argparse
import sys

from hebbopt.training.config import ConfigError, load


def _parse(description: str, argv: list[str] | None, extra=None):
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Any configuration key can be overridden: --section.key value (e.g. --finetune.epochs 5).",
    )
    parser.add_argument(
        "--config", help="YAML configuration (sections data, model, pretrain, vae, finetune, sweep, run)"
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in run.dir from its last checkpoint"
    )
    if extra:
        extra(parser)
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load(args.config, overrides)
    except ConfigError as e:
        parser.error(str(e))
    return args, cfg


def pretrain_main(argv: list[str] | None = None) -> int:
    from hebbopt.training.pretrain import pretrain

    args, cfg = _parse("Unsupervised pre-training (hpca, swta, vae) of a timm backbone.", argv)
    path = pretrain(cfg, resume=args.resume)
    print(f"backbone: {path}")
    return 0


def finetune_main(argv: list[str] | None = None) -> int:
    from hebbopt.training.finetune import finetune

    def extra(p):
        p.add_argument(
            "--backbone", help="pre-trained backbone (.safetensors); default: random initialisation"
        )

    args, cfg = _parse("Supervised fine-tuning on the labelled share of the training set.", argv, extra)
    m = finetune(cfg, backbone=args.backbone, resume=args.resume)
    print(
        f"test top-1 {m['test']['top1']:.2f} %, top-5 {m['test']['top5']:.2f} % "
        f"({m['labelled']} labelled images)"
    )
    return 0


def vae_main(argv: list[str] | None = None) -> int:
    from hebbopt.training.config import Config

    args, cfg = _parse(
        "The VAE baseline: beta-VAE pre-training of the backbone (then run finetune.py).", argv
    )
    from hebbopt.training.vae import pretrain_vae

    assert isinstance(cfg, Config)
    path = pretrain_vae(cfg.replace(pretrain={"method": "vae"}), resume=args.resume)
    print(f"backbone: {path}")
    return 0


def semisup_main(argv: list[str] | None = None) -> int:
    from hebbopt.training.report import table
    from hebbopt.training.semisup import semisup

    args, cfg = _parse("The semi-supervised sweep: methods x regimes x seeds (the paper's Table 2).", argv)
    summary = semisup(cfg, resume=args.resume)
    print(
        table(summary["results"], summary["metric"], dataset=cfg.data.name, methods=list(cfg.sweep.methods))
    )
    return 0


def _clear_errors(main):
    """Configuration problems found while starting (run folder taken, model cannot be built) end
    the command with the message, not a traceback."""

    def wrapped(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2

    wrapped.__doc__ = main.__doc__
    return wrapped


pretrain_main = _clear_errors(pretrain_main)
finetune_main = _clear_errors(finetune_main)
vae_main = _clear_errors(vae_main)
semisup_main = _clear_errors(semisup_main)
