"""A grid of sweeps side by side (hebbopt.sweeps.grid); run it as
`python recipes/grid.py CONFIG [CONFIG ...] --out DIR --parallel N [--resume] [-- --section.key value ...]`
(`--merge`: only merge the records the jobs have written, e.g. after an interrupted grid).

Each configuration's sweep is split into one process per seed and start, `--parallel` at a time
(one GPU: several processes keep it busy); the records are merged into `<out>/<config name>/`
`results.json`, `table.md` and `accuracy.png`. Exit status 1 when a job failed (each is named),
2 on a configuration that cannot run.
"""

import argparse
import sys

from hebbopt.sweeps.grid import merge, plan, run_grid
from hebbopt.training.config import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split(";")[0])
    parser.add_argument("configs", nargs="+", help="configuration files, each a sweep")
    parser.add_argument("--out", required=True, help="the grid's folder")
    parser.add_argument("--parallel", type=int, default=1, help="jobs at a time")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads per job (0: shared out)")
    parser.add_argument("--resume", action="store_true", help="continue every job")
    parser.add_argument("--merge", action="store_true", help="only merge what the jobs have written")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    try:
        if args.merge:
            jobs = plan(args.configs, args.out, argv[split + 1 :])
            merged = {name: merge(args.out, name, jobs) for name in dict.fromkeys(j.config for j in jobs)}
            failed = []
        else:
            merged, failed = run_grid(
                args.configs, args.out, parallel=args.parallel, threads=args.threads,
                overrides=argv[split + 1 :], resume=args.resume,
            )  # fmt: skip
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for name in merged:
        table = f"{args.out}/{name}/table.md"
        print(open(table).read() if merged[name] else f"{name}: no results")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
