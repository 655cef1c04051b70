"""The GPU throughput script runs (a tiny CPU smoke run; its figures come from a GPU)."""

import json
import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).parents[1] / "benchmarks" / "throughput_gpu.py"


def test_throughput_script_smoke(tmp_path):
    out = tmp_path / "t.json"
    args = ["--device", "cpu", "--models", "hebb_alexnet_6l", "--batch", "4", "--precisions", "bf16"]
    args += ["--modes", "eager", "--kinds", "sgd", "hpca", "--steps", "1", "--warmup", "0", "--out", str(out)]
    run = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["kind"] for r in rows] == ["sgd", "hpca"] and all(r["images_per_s"] > 0 for r in rows)
    assert "| hebb_alexnet_6l | bf16 | eager | hpca |" in run.stdout
