"""benchmarks/grid_table.py: records of one backbone at one precision make one table, whichever file
holds them; a record without its precision takes its file's top-level ``"precision"``."""

import importlib.util
import json
import pathlib
import random

SCRIPT = pathlib.Path(__file__).parents[1] / "benchmarks" / "grid_table.py"


def _grid_table():
    spec = importlib.util.spec_from_file_location("grid_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _record(method, setting, seed, val, precision=None):
    r = {"model": "hebb_alexnet_6l", "method": method, "protocol": "finetune", "regime": 10.0, "seed": seed,
         "setting": setting, "val": {"top1": val}, "test": {"top1": val - 0.5}}  # fmt: skip
    return r if precision is None else {**r, "precision": precision}


def _write(path, records, **top):
    path.write_text(json.dumps({"dataset": "cifar10", "metric": "top1", **top, "results": records}))


def test_unrecorded_precision_takes_the_files(tmp_path):
    rng = random.Random()
    hebb = [rng.uniform(50, 60) for _ in range(2)]
    short, long_ = rng.uniform(40, 50), rng.uniform(60, 70)  # the long schedule wins on validation
    _write(tmp_path / "run1.results.json",
           [_record("softhebb", 0, s, v) for s, v in enumerate(hebb)] + [_record("none", 0, 0, short)],
           precision="bf16")  # fmt: skip
    _write(tmp_path / "run3.results.json", [_record("none", 1, 0, long_, precision="bf16")])
    assert _grid_table().main(str(tmp_path)) == 0
    text = (tmp_path / "table.md").read_text()
    assert text.count("## hebb_alexnet_6l") == 1 and "fp32" not in text  # one table, one precision
    gain = json.loads((tmp_path / "gains.json").read_text())["hebb_alexnet_6l"][0]
    assert gain["random_best"][:2] == ["finetune", 1]  # the random start's best: the other file's cell
    assert abs(gain["random_best"][2] - (long_ - 0.5)) < 1e-9
    assert not (tmp_path / "accuracy_hebb_alexnet_6l_no.png").exists()


def test_without_a_file_precision_records_are_fp32_and_apart(tmp_path):
    _write(tmp_path / "a.results.json", [_record("softhebb", 0, 0, 55.0), _record("none", 0, 0, 50.0)])
    _write(tmp_path / "b.results.json", [_record("none", 1, 0, 65.0, precision="bf16")])
    assert _grid_table().main(str(tmp_path)) == 0
    text = (tmp_path / "table.md").read_text()
    assert "## hebb_alexnet_6l, fp32" in text and "## hebb_alexnet_6l, bf16 autocast" in text


def test_every_setting_row_holds_its_seeds_means(tmp_path):
    rng = random.Random()
    vals = {(m, k, s): rng.uniform(30, 80) for m in ("softhebb", "none") for k in (3, 4) for s in (0, 1)}
    records = [_record(m, k, s, v, precision="bf16") for (m, k, s), v in vals.items()]
    records.append({**_record("none", 4, 2, 99.0, precision="bf16"), "diverged": "loss is nan"})
    _write(tmp_path / "run3.results.json", records)
    assert _grid_table().main(str(tmp_path)) == 0
    rows = [line.split(" | ") for line in (tmp_path / "table.md").read_text().splitlines()
            if line.startswith("| 10 % | ")]  # fmt: skip
    for (m, k), start in [(("softhebb", 3), "softhebb"), (("none", 4), "random")]:
        (row,) = [r for r in rows if r[1] == start and r[2] == "finetune" and r[3] == str(k)]
        mean = (vals[m, k, 0] + vals[m, k, 1]) / 2
        assert row[4].startswith(f"{mean:.2f} ± ") and row[5].startswith(f"{mean - 0.5:.2f} ± ")
        assert row[6] == "0, 1 |"  # the diverged seed 2 is left out
