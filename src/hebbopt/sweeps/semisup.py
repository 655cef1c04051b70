"""The semi-supervised sweep: methods × regimes × seeds × protocols, as in the paper's Table 2.

For each seed and method the backbone is pre-trained once (``<dir>/pretrain/<method>-seed<k>``),
then evaluated on every regime by each of ``sweep.protocols``: fine-tuned
(``<dir>/finetune/<method>-seed<k>-<s>pct``), fine-tuned from a linear probe's head (``lpft``,
LP-FT: ``<dir>/lpft/...``), or frozen, with a linear probe or k-nearest neighbours on its features
(``<dir>/linear/...``, ``<dir>/knn/...``, see :mod:`hebbopt.evaluation`). With
``sweep.settings``, every fine-tuning setting of the grid runs in its own folder (``...-set<i>``)
and the table keeps, per method, protocol and regime, the setting with the best mean validation
accuracy (:func:`~hebbopt.evaluation.report.choose`): each start gets its own best settings.
``sweep.only_settings`` runs part of the grid (each setting under its own index), so that a grid
too long for one machine's session is run in parts whose records (``sweep.records``) join.
``sweep.tune_seeds`` runs the whole grid on those seeds only (first) and, on every other seed,
each method's, protocol's and regime's setting chosen on their validation scores.
A cell whose training diverges (a non-finite loss, features or weights: ``FloatingPointError``) is
a result, not the end of the sweep: its record says ``diverged`` (with the message), its folder
keeps it (``diverged.json``), it is never chosen and the table lists it; the sweep goes on with
the next cell. A resumed sweep keeps diverged cells unless ``sweep.retry_diverged``. Settings that
leave a protocol's run unchanged (LP-FT with two values of ``finetune.lr``, which it does not read:
:data:`UNREAD`) run once; the record is reported for each setting (``same_as_setting``).
The frozen protocols compute the backbone's features once per
method and seed (the labelled images of every regime, the validation split and the test split)
and reuse them for every regime and both protocols. After every run the sweep rewrites
``results.json``, ``table.md`` and ``accuracy.png`` in ``<dir>``, so partial results are readable
while it runs; ``resume`` skips finished runs and continues the interrupted one from its checkpoint.
With ``run.log_with``, every run logs into the sweep's tracker run under its folder's path, each
result is logged as ``results/<protocol>/<method>/<s>pct`` (step: the seed) and the final table as
text (``results``).
"""

from __future__ import annotations

import json
import pathlib
import time

import torch
from accelerate import Accelerator

from hebbopt.data import ImageSplits
from hebbopt.evaluation import estimate_norm_statistics, extract_features, knn, linear_probe, retrieval
from hebbopt.evaluation.report import choose, metric_name, plot, table
from hebbopt.files import CorruptFileError, atomic_write_bytes
from hebbopt.selection import classifier
from hebbopt.sweeps import settings as sweep_settings
from hebbopt.sweeps.records import Records, backbone_digest
from hebbopt.training.checkpoints import file_input, read_json, write_json
from hebbopt.training.config import Config, ConfigError
from hebbopt.training.config_checks import setting_overrides, setting_tried_for
from hebbopt.training.finetune import finetune, images_per_second, subsets
from hebbopt.training.metric_checks import check_metrics
from hebbopt.training.models import build_model
from hebbopt.training.pretrain import pretrain
from hebbopt.training.run_folder import Run, resume_problem
from hebbopt.training.sections import TUNED_PROTOCOLS
from hebbopt.training.setup import load_splits, make_accelerator
from hebbopt.training.tracking import Tracker
from hebbopt.weights import load_weights


def semisup(cfg: Config, *, resume: bool = False) -> dict:
    """Run the sweep configured by ``cfg.sweep`` (and every other section).

    The metric is top-1 for datasets of up to 10 classes, else top-5
    (:func:`~hebbopt.evaluation.report.metric_name`), as the paper reports them.

    Args:
        cfg: the configuration; ``run.dir`` holds the sweep, each pre-training and fine-tuning run
            in its own folder under it; ``run.seed`` is replaced by each of ``sweep.seeds``.
        resume: skip finished runs and continue the interrupted one from its checkpoint.

    Returns:
        What ``results.json`` holds: ``dataset``, ``metric`` and ``results``, one entry per
        evaluation run (its metrics without the per-epoch ``history``), each with the ``model``
        (timm name) and its ``protocol`` beside ``method``, ``regime`` and ``seed``, and with
        ``sweep.settings`` the index of its ``setting``.

    Raises:
        ConfigError: the folder holds another sweep (without ``resume``) or a different config, or
            the model cannot be built.
    """
    accelerator = make_accelerator(cfg)
    folder = pathlib.Path(cfg.run.dir).expanduser()
    if resume and (problem := resume_problem(folder, "semisup")):
        raise ConfigError(problem)
    below = [] if (folder / "config.yaml").exists() else sorted(folder.glob("*/*/config.yaml"))
    taken = below[0] if below else None
    if not resume and taken is not None:
        raise ConfigError(  # refused before anything is written
            f"{folder} holds runs of a sweep ({taken.parent}): pass --resume to continue them (the sweep "
            "reuses what matches its configuration), or pick another run.dir"
        )
    indices, space = sweep_settings.setting_indices(folder, cfg, resume)
    changed = indices is not None and indices != list(range(len(space)))
    only = cfg.sweep.only_settings
    if only is not None and indices is not None and not set(only) <= set(indices):
        raise ConfigError(
            f"sweep.only_settings {only}: not the index of a setting of this sweep (its settings: "
            f"{sorted(indices)}, the `setting` of its records)"
        )
    run = Run(
        cfg,
        accelerator,
        resume=resume,
        kind="semisup",
        may_differ=(("sweep", "settings"),) if changed else (),
    )
    root = run.dir
    earlier = _earlier(root) if resume else []
    if changed:  # results of the settings left out are no longer the sweep's
        earlier = [r for r in earlier if "setting" not in r or r["setting"] in indices]
    splits = load_splits(cfg, accelerator)
    build_model(cfg, splits, seed=0, head_norm=cfg.finetune.head_norm)  # fails here, before any training
    grid = [cfg.replace(**setting_overrides(s)) for s in cfg.sweep.settings] or [cfg]  # each checked up front
    run.start()
    if run.main and cfg.sweep.settings:
        sweep_settings.keep(root, space)
    if "linear" in cfg.sweep.protocols and any("probe" in setting for setting in cfg.sweep.settings):
        run.log("sweep.settings vary probe keys: they tune LP-FT's first phase; the linear protocol runs "
                "once per regime, with the probe section as configured")  # fmt: skip
    tracker = Tracker(cfg, accelerator)  # opens run.log_with's trackers, which every run below shares
    metric = metric_name(splits.num_classes)
    methods = list(cfg.sweep.methods)
    results: list[dict] = []
    records = Records(cfg.sweep.records, main=run.main, dataset=cfg.data.label, metric=metric)
    tune = cfg.sweep.tune_seeds
    seeds = list(cfg.sweep.seeds) if tune is None else [*tune, *(s for s in cfg.sweep.seeds if s not in tune)]
    for seed in seeds:
        chosen = None if tune is None or seed in tune else _chosen_on(results, tune)
        for method in methods:
            pre = cfg.replace(
                pretrain={
                    "method": method,
                    "epochs": cfg.sweep.pretrain_epochs.get(method, cfg.pretrain.epochs),
                },
                run={"seed": seed, "dir": str(root / "pretrain" / f"{method}-seed{seed}")},
            )
            cells = _cells(cfg, grid, pre, root, indices or [0], only, chosen)
            held = records.all_held(
                [(sub, protocol) for protocol, *_, sub in cells]
            )  # then no pre-training either
            backbone = None if held else pretrain(pre, resume=resume, accelerator=accelerator, splits=splits)
            digest = None if held else backbone_digest(backbone)
            speed = _pretrain_speed(pre) if backbone is not None else {}
            features = _Features(pre, splits, backbone, accelerator)  # computed at the first probe, once
            ran: dict[str, tuple[int, dict]] = {}  # effective configuration -> (setting, metrics)
            for protocol, regime, k, _, sub in cells:
                tuned = protocol in TUNED_PROTOCOLS
                tag = {"setting": k} if tuned and cfg.sweep.settings else {}
                record = records.find(sub, protocol, digest, any_backbone=held)
                if record is not None:  # the same cell, maybe found at another index of another grid
                    record = {k: v for k, v in record.items() if k not in SETTING_TAGS} | tag
                m = record or (_diverged_before(sub) if resume else None)
                effective = _effective(sub, protocol)
                if m is None and effective in ran:  # the same run as an earlier setting's: reported for both
                    first, m = ran[effective]
                    tag["same_as_setting"] = first
                if m is None:
                    try:
                        m = RUNNERS[protocol](
                            sub, protocol, method, backbone, features, accelerator, resume=resume
                        )
                    except FloatingPointError as e:  # a result, not the end of the sweep
                        m = _diverged(sub, method, protocol, str(e), run)
                ran.setdefault(effective, (k, m))
                if record is None:
                    record = {"model": cfg.model.name, **_record(m, protocol), **tag, **speed}
                    low = cfg.pretrain.statistics_dtype != "float32" and method != "none"
                    stats = {"statistics_dtype": cfg.pretrain.statistics_dtype} if low else {}
                    record = records.add(
                        sub, protocol, {**record, "precision": cfg.run.mixed_precision, **stats}, digest
                    )
                results.append(record)
                _write(root, results + earlier[len(results) :], metric, cfg, methods, run)
                what = method if protocol == "finetune" else f"{method} {protocol}"
                what += f" setting {k}" if tuned and cfg.sweep.settings else ""
                if "diverged" in m:
                    run.log(f"seed {seed} {what} {regime:g}%: DIVERGED ({m['diverged']})")
                    continue
                tracker.log({f"results/{protocol}/{method}/{regime:g}pct": m["test"][metric]}, seed)
                run.log(f"seed {seed} {what} {regime:g}%: test {metric} {m['test'][metric]:.2f}")
    dataset = cfg.data.label
    summary = {"dataset": dataset, "metric": metric, "results": results}
    text = table(results, metric, dataset=dataset, methods=methods, protocols=list(cfg.sweep.protocols))
    run.log("\n" + text, echo=False)
    tracker.log({"results": text}, 0)
    tracker.close()
    run.close()  # the sweep's folder is free again
    return summary


SETTING_TAGS = ("setting", "same_as_setting")
"""A record's place in a sweep's grid (``sweep.settings``): the sweep's own, not the cell's."""

DIVERGED = "diverged.json"
"""The file a cell's folder holds when its training diverged: its record (``diverged``: the message)."""


def _diverged(cfg: Config, method: str, protocol: str, message: str, run: Run) -> dict:
    """The record of a cell whose training diverged (a non-finite loss, features or weights), kept
    in its folder (:data:`DIVERGED`) so that a resumed sweep keeps it rather than retries it."""
    record = {"done": False, "method": method, "protocol": protocol, "regime": cfg.finetune.regime,
              "seed": cfg.run.seed, "diverged": message}  # fmt: skip
    if run.main:
        write_json(pathlib.Path(cfg.run.dir) / DIVERGED, record)
    return record


def _diverged_before(cfg: Config) -> dict | None:
    """A resumed cell's earlier ``diverged`` record, None if it has none or ``sweep.retry_diverged``
    (then the record is removed and the cell runs again, from its last checkpoint)."""
    file = pathlib.Path(cfg.run.dir) / DIVERGED
    if not file.exists():
        return None
    if cfg.sweep.retry_diverged:
        file.unlink()
        return None
    return read_json(file)


UNREAD = {
    "finetune": {"finetune": ("lpft_lr", "lpft_epochs", "lpft_steps"), "probe": None},
    "lpft": {"finetune": ("lr", "epochs", "steps")},
}
"""What the tuned protocols do not read: ``{section: keys}`` (None: the whole section). The frozen
protocols run once per regime, so none of their runs can repeat another."""


def _effective(cfg: Config, protocol: str) -> str:
    """A cell's configuration without what its protocol does not read: two settings of the grid with
    the same one are the same run (e.g. LP-FT with two values of ``finetune.lr``)."""
    d = cfg.to_dict()
    for section, keys in UNREAD.get(protocol, {}).items():
        for key in list(d[section]) if keys is None else keys:
            d[section].pop(key, None)
    d["run"].pop("dir")
    return json.dumps({"protocol": protocol, **d}, sort_keys=True, default=str)


def _chosen_on(results: list[dict], seeds: list[int]) -> dict:
    """``{(regime, method, protocol): setting}``: the setting of each with the best validation
    score over the tuning ``seeds``' results (:func:`~hebbopt.evaluation.report.choose`)."""
    return choose([r for r in results if r.get("seed") in seeds and "setting" in r])[1]


def _cells(
    cfg: Config, grid: list[Config], pre: Config, root: pathlib.Path, indices: list[int],
    only: list[int] | None = None, chosen: dict | None = None,
) -> list[tuple]:  # fmt: skip
    """The cells of one method and seed, in the sweep's order: ``(protocol, regime, setting index,
    folder name, configuration)``; ``indices`` gives each setting's folder index (see
    :mod:`~hebbopt.sweeps.settings`), ``only`` the folder indices run (``sweep.only_settings``;
    None: all), ``chosen`` the one setting run per ``(regime, method, protocol)`` (a seed outside
    ``sweep.tune_seeds``; None: all); a setting whose ``methods`` leave out this start is not run
    for it (:data:`~hebbopt.training.config_checks.SETTING_METHODS`)."""
    cells = []
    for protocol in cfg.sweep.protocols:
        for regime in cfg.sweep.regimes:
            tuned = protocol in TUNED_PROTOCOLS
            pick = None if chosen is None else chosen.get((float(regime), pre.pretrain.method, protocol))
            entries = cfg.sweep.settings or [{}]
            for k, setting, entry in zip(indices, grid, entries, strict=True) if tuned else [(0, cfg, {})]:
                if not setting_tried_for(entry, pre.pretrain.method):
                    continue
                if tuned and cfg.sweep.settings and only is not None and k not in only:
                    continue
                if tuned and cfg.sweep.settings and chosen is not None and k != pick:
                    continue
                name = f"{pre.pretrain.method}-seed{pre.run.seed}-{regime:g}pct" + (
                    f"-set{k}" if tuned and cfg.sweep.settings else ""
                )
                cells.append((protocol, regime, k, name, _with(setting, pre, regime, root / protocol / name)))
    return cells


def _with(setting: Config, pre: Config, regime: float, folder: pathlib.Path) -> Config:
    """The configuration of one evaluation run: the pre-training's (method, seed), with the fine-tuning
    and probe sections of one setting of the grid, the regime and the run folder."""
    return pre.replace(
        finetune={**setting.to_dict()["finetune"], "regime": regime},
        probe=setting.to_dict()["probe"],
        run={"dir": str(folder)},
    )


def _finetune(
    cfg: Config, protocol: str, method: str, backbone, features: _Features, accelerator: Accelerator, *,
    resume: bool,
) -> dict:  # fmt: skip
    """Every layer fine-tuned from the backbone (:func:`~hebbopt.training.finetune.finetune`)."""
    return finetune(cfg, backbone=backbone, method=method, resume=resume, accelerator=accelerator,
                    splits=features.splits)  # fmt: skip


def _lpft(
    cfg: Config, protocol: str, method: str, backbone, features: _Features, accelerator: Accelerator, *,
    resume: bool,
) -> dict:  # fmt: skip
    """LP-FT (Kumar et al., ICLR 2022): the linear probe on the frozen features (as the ``linear``
    protocol trains it: ``probe`` section), then every layer fine-tuned from the probe's head
    (:func:`~hebbopt.training.finetune.finetune` with ``head``: ``finetune.lpft_lr``,
    ``finetune.lpft_epochs``). The probe's validation and test accuracy are recorded under ``probe``."""
    inputs = {"backbone": file_input(backbone, "backbone") if backbone is not None else None}
    finished = Run(cfg, accelerator, resume=resume, kind="finetune", inputs=inputs).done()
    if finished:
        return finished
    labelled, _ = subsets(cfg, features.splits)
    try:
        train_x, train_y = features.labelled(labelled)
        r = _lpft_probe(cfg, features, labelled, train_x, train_y, accelerator)
    except FloatingPointError as e:
        raise FloatingPointError(f"{cfg.run.dir}: lpft's probe: {e}; nothing is marked done") from None
    probe = {"test": r["test"], "best_epoch": r["best_epoch"], **({"val": r["val"]} if "val" in r else {})}
    return finetune(
        cfg, backbone=backbone, method=method, resume=resume, accelerator=accelerator, splits=features.splits,
        head=r["head"], protocol="lpft", extra={"probe": probe},
    )  # fmt: skip


def _lpft_probe(
    cfg: Config, features: _Features, labelled, train_x, train_y, accelerator: Accelerator
) -> dict:
    p = cfg.probe
    return linear_probe(
        train_x, train_y, features.test, features.test_y, num_classes=features.splits.num_classes,
        epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, dropout=p.dropout, seed=cfg.run.seed,
        val=features.validation(), device=accelerator.device, normalize=p.normalize,
        flipped_x=features.flipped(labelled), return_head=True,
        progress=accelerator.is_main_process and cfg.run.progress,
    )  # fmt: skip


def _pretrain_speed(pre: Config) -> dict:
    """``pretrain_images_per_s`` of the backbone's pre-training, from its folder's metrics (``{}``
    when they do not say: a backbone pre-trained by an older hebbopt, or not by this sweep)."""
    file = pathlib.Path(pre.run.dir) / "metrics.json"
    try:
        speed = images_per_second(read_json(file).get("history", [])) if file.exists() else None
    except (CorruptFileError, AttributeError, TypeError):
        return {}
    return {} if speed is None else {"pretrain_images_per_s": speed}


def _record(metrics: dict, protocol: str) -> dict:
    """A run's metrics as ``results.json`` lists them: without ``history``, ``protocol`` after ``method``."""
    record: dict = {}
    for key, value in metrics.items():
        if key not in ("history", "protocol"):
            record[key] = value
        if key == "method":
            record["protocol"] = protocol
    record.setdefault("protocol", protocol)
    return record


def _backbone(cfg: Config, splits: ImageSplits, backbone: str | pathlib.Path | None) -> torch.nn.Module:
    """The model as fine-tuning starts it: seeded, then the backbone's weights but its classifier."""
    model = build_model(cfg, splits, seed=cfg.run.seed, drop_rate=cfg.finetune.dropout)
    if backbone is not None:
        head = classifier(model)
        prefix = next((n + "." for n, m in model.named_modules() if m is head and n), None)
        load_weights(model, backbone, skip=(prefix,) if prefix else ())
    return model


class _Features:
    """The frozen backbone's features of one method and seed: the labelled images of every regime
    (their union), the validation split and the test split, computed at the first use, then kept.
    Each pass shows a progress bar on the main process when ``run.progress`` (on CIFAR-10 with flips
    they take minutes); non-finite features stop the sweep (``FloatingPointError``)."""

    def __init__(self, cfg: Config, splits: ImageSplits, backbone, accelerator: Accelerator) -> None:
        self.cfg, self.splits, self.backbone, self.accelerator = cfg, splits, backbone, accelerator
        self.ready = False

    def _compute(self) -> None:
        cfg, splits = self.cfg, self.splits
        picks = [subsets(cfg.replace(finetune={"regime": s}), splits) for s in cfg.sweep.regimes]
        self.rows = torch.unique(torch.cat([labelled for labelled, _ in picks]))  # sorted
        self.val = picks[0][1]
        model = _backbone(cfg, splits, self.backbone)
        kwargs = dict(
            model=model, batch_size=256, device=self.accelerator.device, workers=cfg.data.workers,
            pre_logits=cfg.probe.features == "pre_logits", channels_last=cfg.model.channels_last,
            progress=self.accelerator.is_main_process and cfg.run.progress,
        )  # fmt: skip
        of = f"features of {cfg.pretrain.method} seed {cfg.run.seed}"
        if self.backbone is None and cfg.probe.calibrate_norm:
            estimate_norm_statistics(
                model, splits.train, device=self.accelerator.device, channels_last=cfg.model.channels_last,
                workers=cfg.data.workers, progress=kwargs["progress"],
                desc=f"BatchNorm statistics of none seed {cfg.run.seed}",
            )  # fmt: skip
        start, count = time.perf_counter(), 0  # the features' images/s, after the statistics

        def features(images, what: str, **extra) -> torch.Tensor:
            nonlocal count
            out = extract_features(images=images, desc=f"{of}: {what}", **kwargs, **extra)
            count += len(out)  # every image of the split (the features are gathered)
            return out

        self.train = features(splits.train, "labelled", indices=self.rows)
        self.train_flip = None
        if cfg.probe.flip:
            self.train_flip = features(splits.train, "labelled, mirrored", indices=self.rows, flip=True)
        self.val_x = None
        if len(self.val):
            self.val_x = features(splits.train, "validation", indices=self.val)
        self.test = features(splits.test, "test")
        self.test_y = splits.test.labels  # type: ignore[attr-defined]
        self.images_per_s = count / max(time.perf_counter() - start, 1e-9)
        del model
        self.ready = True

    def labelled(self, labelled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The features and labels of the labelled images (the kept matrix itself when it is all of them)."""
        if not self.ready:
            self._compute()
        return self._rows(self.train, labelled), self.splits.train_labels[labelled]

    def flipped(self, labelled: torch.Tensor) -> torch.Tensor | None:
        """The features of the mirrored labelled images (``probe.flip``), else None."""
        if not self.ready:
            self._compute()
        return None if self.train_flip is None else self._rows(self.train_flip, labelled)

    def _rows(self, features: torch.Tensor, labelled: torch.Tensor) -> torch.Tensor:
        pos = torch.searchsorted(self.rows, labelled)
        return features if len(pos) == len(self.rows) else features[pos]

    def validation(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The validation features and labels, None without a validation split."""
        if self.val_x is None:
            return None
        return self.val_x, self.splits.train_labels[self.val]


def _probe(
    cfg: Config, protocol: str, method: str, backbone, features: _Features, accelerator: Accelerator, *,
    resume: bool,
) -> dict:  # fmt: skip
    """One frozen-backbone evaluation (``linear`` or ``knn``) in its run folder; a finished one is
    read back."""
    inputs = {"backbone": file_input(backbone, "backbone") if backbone is not None else None}
    run = Run(cfg, accelerator, resume=resume, kind="finetune", inputs=inputs)
    finished = run.finished()
    if finished:
        return finished
    run.start()
    try:
        return _evaluate_frozen(cfg, protocol, method, backbone, features, accelerator, run)
    except FloatingPointError as e:  # the probe names what is not finite; the run folder is ours to say
        message = f"{run.dir}: {e}; the run is stopped, not marked done"
        run.log(message)
        run.close()
        raise FloatingPointError(message) from None


RUNNERS = {"finetune": _finetune, "lpft": _lpft, "linear": _probe, "knn": _probe}
"""How the sweep runs one cell of each protocol (:data:`~hebbopt.training.config.PROTOCOLS`): each
takes ``(cfg, protocol, method, backbone, features, accelerator, *, resume)`` and returns the run's
metrics (a finished run's are read back)."""


def _evaluate_frozen(
    cfg: Config, protocol: str, method: str, backbone, features: _Features, accelerator: Accelerator, run: Run
) -> dict:
    labelled, val = subsets(cfg, features.splits)
    train_x, train_y = features.labelled(labelled)
    validation = features.validation()
    p, device, classes = cfg.probe, accelerator.device, features.splits.num_classes
    test_x, test_y = features.test, features.test_y
    extra: dict = {}
    if protocol == "linear":
        r = linear_probe(
            train_x, train_y, test_x, test_y, num_classes=classes, epochs=p.epochs, batch_size=p.batch_size,
            lr=p.lr, dropout=p.dropout, seed=cfg.run.seed, val=validation, device=device,
            normalize=p.normalize, flipped_x=features.flipped(labelled),
            progress=accelerator.is_main_process and cfg.run.progress,
        )  # fmt: skip
        test, extra = r["test"], {"val": r.get("val"), "best_epoch": r["best_epoch"], "history": r["history"]}
    else:
        ks = p.knn_k if isinstance(p.knn_k, list) else [p.knn_k]
        on_test = knn(train_x, train_y, test_x, test_y, k=ks, device=device, num_classes=classes)
        by_k = {str(k): {"test": on_test[k]} for k in ks}
        best, on_val = ks[0], None  # without validation: the first k (choosing on the test split would cheat)
        if validation is not None:
            on_val = knn(train_x, train_y, *validation, k=ks, device=device, num_classes=classes)
            for k in ks:
                by_k[str(k)]["val"] = on_val[k]
            best = max(ks, key=lambda k: (on_val[k]["top1"], -ks.index(k)))  # the first of equals
        test = on_test[best]
        val_best = {k: v for k, v in on_val[best].items() if k != "k"} if on_val is not None else None
        extra = {"val": val_best, "k": test["k"], "by_k": by_k}
        if p.retrieval_ks:
            extra["retrieval"] = retrieval(train_x, train_y, test_x, test_y, ks=p.retrieval_ks, device=device)
    metrics = {
        "done": True, "method": method, "protocol": protocol, "regime": cfg.finetune.regime,
        "seed": cfg.run.seed, "labelled": len(labelled), "validation": len(val), "features": train_x.shape[1],
        "test": {k: v for k, v in test.items() if k != "k"},
        **{k: v for k, v in extra.items() if v is not None},
        "backbone": str(backbone) if backbone else None, "features_images_per_s": features.images_per_s,
    }  # fmt: skip
    sizes = f"{len(labelled)} labelled, {train_x.shape[1]} features"
    what = f"{protocol} {method} {cfg.finetune.regime:g}% ({sizes})"
    run.finish(metrics, f"{what}: test top-1 {test['top1']:.2f}, top-5 {test['top5']:.2f}")
    return metrics


def _write(
    root: pathlib.Path, results: list[dict], metric: str, cfg: Config, methods: list[str], run: Run
) -> None:
    if not run.main:
        return
    write_json(root / "results.json", {"dataset": cfg.data.label, "metric": metric, "results": results})
    protocols = list(cfg.sweep.protocols)
    text = table(results, metric, dataset=cfg.data.label, methods=methods, protocols=protocols)
    atomic_write_bytes(root / "table.md", text.encode())
    plot(results, metric, root / "accuracy.png", dataset=cfg.data.label, methods=methods, protocols=protocols)


def _earlier(root: pathlib.Path) -> list[dict]:
    """The results a resumed sweep wrote before (same config, so the same order): kept in the
    summary files until re-read, so that ``results.json`` never shrinks; checked as each run's
    metrics are (finite, in range), so a damaged file is named rather than shown."""
    file = root / "results.json"
    if not file.exists():
        return []
    saved = read_json(file)
    results = saved.get("results", []) if isinstance(saved, dict) else None
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise CorruptFileError(
            f"{file}: not a sweep's results; delete it: the sweep writes it again from its runs"
        )
    for i, record in enumerate(results):
        if problem := check_metrics(record):
            raise CorruptFileError(
                f"{file}: results[{i}]: {problem}; delete it: the sweep writes it again from its runs"
            )
    return list(results)
