"""Sweeps side by side: each sweep of a list of configurations split into one job per seed and start
(``sweep.seeds`` × ``sweep.methods``), every job a process of its own, up to ``parallel`` at a time,
and the records merged into one ``results.json``, ``table.md`` and ``accuracy.png`` per configuration.

On one GPU a sweep's steps are small and short (batches of 64 images of 32×32): one process leaves
the device mostly idle, waiting for Python. Several processes keep it busy. The merged table is the
one a single sweep over every seed and start would write: :func:`~hebbopt.evaluation.report.table`
chooses each start's settings by the mean validation accuracy over all the seeds it sees.

A job that fails (a diverging setting, a damaged file) is named in the log and the exit status; the
others run on, and the tables hold what finished. The tables are rewritten while the jobs run (every
``merge_every`` seconds and after each job), from the records each job's sweep writes after every
run, so an interrupted grid leaves its finished cells readable; ``resume`` continues every job.

With ``sweep.records`` (:mod:`hebbopt.sweeps.records`) each job keeps its own file beside it,
``<stem>.<method>-seed<k>.json``.

Layout: ``<out>/<config name>/<method>-seed<k>/`` (each job's sweep folder), its output in
``<method>-seed<k>.log`` beside it, and ``<out>/<config name>/results.json``, ``table.md``,
``accuracy.png``.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Callable, Sequence

from hebbopt.evaluation.report import plot, table
from hebbopt.files import atomic_write_bytes
from hebbopt.training.checkpoints import read_json, write_json
from hebbopt.training.config import load

_COMMAND = "import sys; from hebbopt.cli import semisup_main; sys.exit(semisup_main())"


@dataclasses.dataclass
class Job:
    """One sweep of the grid: one configuration, one seed, one start.

    Args:
        config: the configuration's name (its file's stem).
        method: the start (``sweep.methods``' entry).
        seed: the seed.
        folder: the job's sweep folder (``run.dir``).
        args: the command-line arguments of its ``recipes/semisup.py``.
    """

    config: str
    method: str
    seed: int
    folder: pathlib.Path
    args: list[str]


def plan(
    configs: Sequence[str | os.PathLike], out: str | os.PathLike, overrides: Sequence[str] = ()
) -> list[Job]:
    """The jobs of a grid, Hebbian starts first (their pre-training makes them the longest).

    Every configuration is loaded and checked first, so a bad one fails before anything runs.

    Args:
        configs: configuration files, each a sweep.
        out: the grid's folder.
        overrides: ``--section.key value`` overrides for every configuration.

    Returns:
        The jobs.

    Raises:
        ConfigError: a configuration cannot run, or two share a file name.
    """
    from hebbopt.training.config import ConfigError

    jobs: list[Job] = []
    names = [pathlib.Path(c).stem for c in configs]
    if len(set(names)) != len(names):
        raise ConfigError(f"configurations must have different file names, got {list(map(str, configs))}")
    for path, name in zip(configs, names, strict=True):
        cfg = load(path, list(overrides))
        for seed in cfg.sweep.seeds:
            for method in cfg.sweep.methods:
                folder = pathlib.Path(out) / name / f"{method}-seed{seed}"
                args = ["--config", str(path), *overrides, "--sweep.seeds", f"[{seed}]",
                        "--sweep.methods", f"[{method}]", "--run.dir", str(folder)]  # fmt: skip
                if cfg.sweep.records:  # one file per job: the jobs run at the same time
                    file = pathlib.PurePath(cfg.sweep.records)
                    args += [
                        "--sweep.records",
                        str(file.with_name(f"{file.stem}.{method}-seed{seed}{file.suffix}")),
                    ]
                jobs.append(Job(name, method, seed, folder, args))
    return sorted(jobs, key=lambda j: j.method == "none")  # stable: otherwise in the files' order


def merge(out: str | os.PathLike, config: str, jobs: Sequence[Job]) -> dict | None:
    """Merge the records the jobs of one configuration have written so far into its tables.

    Args:
        out: the grid's folder.
        config: the configuration's name.
        jobs: the grid's jobs (those of other configurations are skipped).

    Returns:
        The merged ``results.json`` content (``dataset``, ``metric``, ``results``), None while no
        job has written one.
    """
    mine = [j for j in jobs if j.config == config]
    summaries = [read_json(j.folder / "results.json") for j in mine if (j.folder / "results.json").exists()]
    if not summaries:
        return None
    dataset, metric = summaries[0]["dataset"], summaries[0]["metric"]
    results = [r for s in summaries for r in s["results"]]
    methods = list(dict.fromkeys(j.method for j in mine))
    protocols = list(dict.fromkeys(r["protocol"] for r in results))
    root = pathlib.Path(out) / config
    merged = {"dataset": dataset, "metric": metric, "results": results}
    write_json(root / "results.json", merged)
    text = table(results, metric, dataset=dataset, methods=methods, protocols=protocols)
    atomic_write_bytes(root / "table.md", text.encode())
    plot(results, metric, root / "accuracy.png", dataset=dataset, methods=methods, protocols=protocols)
    return merged


def run_grid(
    configs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    parallel: int = 1,
    threads: int = 0,
    overrides: Sequence[str] = (),
    resume: bool = False,
    merge_every: float = 30.0,
    log: Callable[[str], None] = print,
) -> tuple[dict[str, dict | None], list[Job]]:
    """Run a grid of sweeps, ``parallel`` jobs at a time, and merge each configuration's records.

    Args:
        configs: configuration files, each a sweep.
        out: the grid's folder.
        parallel: jobs at a time (at least 1).
        threads: torch CPU threads per job (0: the CPUs divided among the parallel jobs).
        overrides: ``--section.key value`` overrides for every configuration.
        resume: continue every job (``--resume``).
        merge_every: seconds between merges while jobs run.
        log: where the grid's progress lines go.

    Returns:
        ``({config name: merged results or None}, the jobs that failed)``.

    Raises:
        ConfigError: a configuration cannot run (before any job starts), or ``parallel`` < 1.
    """
    from hebbopt.training.config import ConfigError

    if parallel < 1:
        raise ConfigError(f"parallel must be >= 1, got {parallel}")
    jobs = plan(configs, out, overrides)
    threads = threads or max(1, (os.cpu_count() or 1) // min(parallel, len(jobs)))
    waiting, running, failed = list(jobs), {}, []
    last_merge, start = time.monotonic(), time.monotonic()
    while waiting or running:
        while waiting and len(running) < parallel:
            job = waiting.pop(0)
            job.folder.mkdir(parents=True, exist_ok=True)
            args = [*job.args, "--run.threads", str(threads), "--run.progress", "false"]
            args += ["--resume"] if resume and (job.folder / "run.json").exists() else []
            with open(job.folder.parent / f"{job.folder.name}.log", "ab") as stream:
                running[job.folder] = (
                    job,
                    subprocess.Popen([sys.executable, "-c", _COMMAND, *args], stdout=stream, stderr=stream),
                )
            log(f"grid: started {job.config} {job.method} seed {job.seed}")
        time.sleep(0.2)
        for folder, (job, process) in list(running.items()):
            if process.poll() is None:
                continue
            del running[folder]
            what = f"{job.config} {job.method} seed {job.seed}"
            elapsed = time.monotonic() - start
            if process.returncode:
                failed.append(job)
                log(f"grid: FAILED {what} (exit {process.returncode}; {folder.parent / folder.name}.log)")
            else:
                log(f"grid: done {what} at {elapsed:.0f} s")
            merge(out, job.config, jobs)
        if time.monotonic() - last_merge > merge_every:
            for name in dict.fromkeys(j.config for j in jobs):
                merge(out, name, jobs)
            last_merge = time.monotonic()
    merged = {name: merge(out, name, jobs) for name in dict.fromkeys(j.config for j in jobs)}
    return merged, failed
