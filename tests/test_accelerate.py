"""accelerate: DDP-prepared models, AcceleratedOptimizer, accumulation, save_state/load_state."""

import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch
from accelerate import Accelerator
from dist_worker import batches, model, optimizer, train
from helpers import rel_err

HERE = pathlib.Path(__file__).parent


@pytest.mark.parametrize("rule", ["swta", "hpca", "bcm"])  # bcm: a rule with state
def test_two_processes_with_accumulation_equal_one_large_batch(tmp_path, rule):
    out = tmp_path / "weights.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    subprocess.run(
        [*cmd, str(HERE / "accelerate_worker.py"), rule, str(out)], check=True, env=env, timeout=300
    )
    net = model()
    train(net, optimizer(rule, net))  # one process, each global batch at once
    got = torch.load(out)
    for k, v in net.state_dict().items():
        assert rel_err(got[k], v) < 1e-5, k


def test_accelerate_launch_with_the_two_process_cpu_config(tmp_path):
    """`accelerate launch --config_file recipes/accelerate/cpu2.yaml` starts two CPU processes whose
    Hebbian steps equal one process's with the whole batch (the recipes' documented CPU launch)."""
    out = tmp_path / "weights.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    config = HERE.parent / "recipes" / "accelerate" / "cpu2.yaml"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config)]
    with socket.socket() as free:  # a port nothing else holds, for the processes' rendezvous
        free.bind(("127.0.0.1", 0))
        cmd += ["--main_process_port", str(free.getsockname()[1])]
    worker = [str(HERE / "accelerate_worker.py"), "swta", str(out)]
    subprocess.run([*cmd, *worker], check=True, env=env, timeout=300)
    net = model()
    train(net, optimizer("swta", net))
    got = torch.load(out)
    for k, v in net.state_dict().items():
        assert rel_err(got[k], v) < 1e-5, k


@pytest.mark.parametrize("rule", ["swta", "bcm"])  # bcm: its state goes through the checkpoint
def test_save_state_load_state_resumes_bit_identically(tmp_path, rule):
    data = batches() * 2

    def run(steps, resume_from=None, save_at=None):
        acc = Accelerator(cpu=True, project_dir=str(tmp_path))
        net = model()
        opt = optimizer(rule, net)
        net, opt = acc.prepare(net, opt)
        if resume_from:
            acc.load_state(resume_from)
        for i in steps:
            with torch.no_grad():
                net(data[i])
            if i == save_at:
                acc.save_state(str(tmp_path / "ckpt"))  # statistics of batch i pending
            if i % 2 == 1:
                opt.step()
        opt.optimizer.close()
        return net.state_dict()

    full = run(range(6))
    run(range(4), save_at=2)
    resumed = run(range(3, 6), resume_from=str(tmp_path / "ckpt"))
    for k, v in full.items():
        assert torch.equal(resumed[k], v), k
