"""Multi-process runs (gloo, CPU): statistics are all-reduced, so N×b == 1×(N·b)."""

import torch
import torch.multiprocessing as mp
from dist_worker import model, optimizer, train, worker
from helpers import rel_err

from hebbopt.rules import RULES


def spawn(tmp_path, rule, mismatch=False):
    mp.spawn(worker, args=(2, str(tmp_path / "init"), rule, str(tmp_path), mismatch), nprocs=2, join=True)


def test_two_processes_equal_one_process_with_twice_the_batch(tmp_path):
    spawn(tmp_path, list(RULES))  # one spawn for every registered rule
    for rule in RULES:
        net = model()
        start = {k: v.clone() for k, v in net.state_dict().items()}
        opt = optimizer(rule, net)
        train(net, opt)
        got = torch.load(tmp_path / f"weights-{rule}.pt", weights_only=True)
        for k, v in net.state_dict().items():
            assert rel_err(got[k], v) < 1e-5, (rule, k)
            hooked = k in ("0.weight", "3.weight")
            assert torch.equal(v, start[k]) != hooked, (rule, k)  # hooked weights moved; not biases, head
        # Any rule state: bit-identical on both ranks, and that of one process with the whole batch.
        ranks = [torch.load(tmp_path / f"rule-state-{rule}-{r}.pt", weights_only=True) for r in (0, 1)]
        single = [s.get("rule_state", {}) for s in opt.state_dict()["state"].values()]
        for r0, r1, one in zip(*ranks, single, strict=True):
            assert r0.keys() == r1.keys() == one.keys(), rule
            for key in one:
                assert torch.equal(r0[key], r1[key]) and rel_err(r0[key], one[key]) < 1e-5, (rule, key)


def test_ranks_with_different_layers_raise_instead_of_hanging(tmp_path):
    spawn(tmp_path, ["hpca"], mismatch=True)
    for rank in (0, 1):
        text = (tmp_path / f"error{rank}.txt").read_text()
        assert "differ across processes" in text
    assert not (tmp_path / "weights-hpca.pt").exists()
