"""A random start's BatchNorm statistics from the data (``probe.calibrate_norm``): the closed form
on a BatchNorm after a fixed convolution, nothing else touched, restore on failure, and a deep
SoftHebb-block VGG whose random features only stay usable with them."""

import pytest
import timm
import torch
from test_finetune_protocols import TINY
from torch import nn

from hebbopt.evaluation import estimate_norm_statistics, extract_features
from hebbopt.sweeps import semisup
from hebbopt.sweeps.records import cell_digest
from hebbopt.training import load


def _net() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1), nn.BatchNorm2d(2)
    )


@pytest.mark.parametrize("batch_size", [10, 7])
def test_statistics_are_the_mean_over_batches_of_each_batch_statistics(batch_size):
    torch.manual_seed(0)
    net = _net()
    images = torch.rand(40, 3, 6, 6) * 3 + 1
    weights = {
        k: v.clone() for k, v in net.state_dict().items() if "running" not in k and "num_batches" not in k
    }
    net.eval()
    assert estimate_norm_statistics(net, images, batch_size=batch_size) == 2
    assert not net.training and all(m.momentum == 0.1 for m in (net[1], net[4]))
    for k, v in weights.items():
        assert torch.equal(net.state_dict()[k], v), k  # no weight changes
    # closed form: the first BatchNorm sees the fixed convolution's outputs; cumulative average over
    # the batches (a last batch of one image is skipped) of each batch's mean and unbiased variance
    batches = [b for b in images.split(batch_size) if len(b) > 1]
    with torch.no_grad():
        outs = [net[0](b) for b in batches]
    means = torch.stack([o.mean((0, 2, 3)) for o in outs]).mean(0)
    variances = torch.stack([o.var((0, 2, 3), unbiased=True) for o in outs]).mean(0)
    torch.testing.assert_close(net[1].running_mean, means, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(net[1].running_var, variances, rtol=1e-5, atol=1e-6)
    assert net[1].num_batches_tracked == len(batches)


def test_refuses_a_batch_of_one_and_restores_on_non_finite_statistics():
    net = _net()
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        estimate_norm_statistics(net, torch.rand(4, 3, 6, 6), batch_size=1)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.rand(8, 3, 6, 6)
    images[5, 0, 0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="non-finite running statistics"):
        estimate_norm_statistics(net, images, batch_size=4)
    for k, v in before.items():
        assert torch.equal(net.state_dict()[k], v), k
    assert net[1].momentum == 0.1 and net.training
    assert estimate_norm_statistics(nn.Linear(3, 2), torch.rand(4, 3)) == 0  # nothing to set


def test_a_random_softhebb_vgg_needs_them_for_usable_features():
    torch.manual_seed(0)
    model = timm.create_model("hebb_vgg11", num_classes=10, block="softhebb", head_norm="l2", width=0.25)
    images = torch.rand(64, 3, 32, 32)
    raw = extract_features(model, images, batch_size=32)
    # untouched statistics: the scale grows by orders of magnitude at each of the 8 layers, and the
    # l2 scaling of the head overflows to all zeros
    assert raw.abs().max() == 0 or not torch.isfinite(raw).all()
    estimate_norm_statistics(model, images, batch_size=32)
    calibrated = extract_features(model, images, batch_size=32)
    torch.testing.assert_close(calibrated.square().mean(1), torch.ones(64))
    assert calibrated.std(0).mean() > 0.1  # the images differ in their features


def test_a_sweep_sets_them_for_the_random_start_only_and_only_when_asked(tmp_path):
    sweep = ["--sweep.methods", "[softhebb, none]", "--sweep.regimes", "[40]", "--sweep.seeds", "[0]",
             "--sweep.protocols", "[linear]"]  # fmt: skip
    runs = {}
    for on in (False, True):
        args = [
            *TINY,
            *sweep,
            "--probe.calibrate_norm",
            str(on).lower(),
            "--run.dir",
            str(tmp_path / str(on)),
        ]
        runs[on] = {r["method"]: r for r in semisup(load(None, args))["results"]}
    # the Hebbian backbone's features are those of its pre-training either way; the random start's change
    assert runs[True]["softhebb"]["test"] == runs[False]["softhebb"]["test"]
    assert runs[True]["none"]["test"] != runs[False]["none"]["test"]
    cfg = load(None, [*TINY])
    assert cell_digest(cfg, "linear") == cell_digest(cfg.replace(probe={"calibrate_norm": False}), "linear")
    assert cell_digest(cfg, "linear") != cell_digest(cfg.replace(probe={"calibrate_norm": True}), "linear")
