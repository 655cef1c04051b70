"""Hebbian pre-training, then supervised fine-tuning on a few labels: scikit-learn's digits.

The main job of the README until the recipes land: runs offline (the digits ship inside
scikit-learn) in about a minute on 2 CPU cores and prints test accuracy for Hebbian pre-training
(HPCA, soft-WTA) against no pre-training, at low label regimes, mean ± std over seeds.

    python examples/semisup_digits.py [--epochs 5] [--seeds 0 1 2] [--regimes 2 5 10]
"""

from __future__ import annotations

import argparse
import copy
import statistics

import torch
from sklearn.datasets import load_digits
from torch import nn

import hebbopt


def digits(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """1797 8×8 grey digits, 75 % / 25 % train/test split, normalised by train statistics."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    cut = int(0.75 * len(x))
    train, test = perm[:cut], perm[cut:]
    mean, std = x[train].mean(), x[train].std()
    return (x[train] - mean) / std, y[train], (x[test] - mean) / std, y[test]


def net(num_classes: int = 10) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1, bias=False), nn.ReLU(), nn.BatchNorm2d(32),
        nn.Conv2d(32, 64, 3, bias=False), nn.ReLU(), nn.MaxPool2d(2), nn.BatchNorm2d(64),
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, 256, bias=False), nn.ReLU(), nn.BatchNorm1d(256),
        nn.Dropout(0.5), nn.Linear(256, num_classes),
    )  # fmt: skip


def pretrain(model: nn.Module, method: str, x: torch.Tensor, epochs: int, seed: int) -> None:
    """Unsupervised: every training image, labels unused."""
    if method == "none":
        return
    # Sanger's rule is stable for lr·‖x‖² ≲ 1 (576 BN-normalised inputs to the Linear layer).
    opt = hebbopt.HPCAHebb(model, lr=1e-3) if method == "hpca" else hebbopt.SoftWTAHebb(model, lr=1e-2)
    g = torch.Generator().manual_seed(seed)
    model.train()
    with opt:
        for _ in range(epochs):
            for idx in torch.randperm(len(x), generator=g).split(64):
                with torch.no_grad():
                    model(x[idx])
                opt.step()


def labelled_subset(y: torch.Tensor, percent: float, seed: int) -> torch.Tensor:
    """A class-balanced ``percent`` % of the indices (at least one per class)."""
    g = torch.Generator().manual_seed(seed)
    per_class = max(1, round(len(y) * percent / 100 / 10))
    picks = [torch.nonzero(y == c).flatten() for c in range(10)]
    return torch.cat([p[torch.randperm(len(p), generator=g)[:per_class]] for p in picks])


def finetune_and_test(model, x, y, x_test, y_test, idx, seed: int, probe: bool, steps: int = 300) -> float:
    """SGD on the labelled subset (Nesterov momentum, as the paper), then test accuracy.

    End to end as the paper, or (``probe``) the classifier only, on frozen features.
    """
    torch.manual_seed(seed)

    def params(m):
        return m[-1].parameters() if probe else m.parameters()

    opt = torch.optim.SGD(params(model), lr=1e-2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(steps):
        batch = idx[torch.randint(len(idx), (min(64, len(idx)),))]
        opt.zero_grad()
        loss_fn(model(x[batch]), y[batch]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x_test).argmax(1) == y_test).float().mean().item() * 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=5, help="Hebbian pre-training epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--regimes", type=float, nargs="+", default=[2, 5, 10], help="% labelled")
    parser.add_argument("--probe", action="store_true", help="train the classifier only (frozen features)")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    methods = ["hpca", "swta", "none"]
    acc: dict[tuple[str, float], list[float]] = {}
    for seed in args.seeds:
        x, y, x_test, y_test = digits(seed)
        for method in methods:
            torch.manual_seed(seed)
            base = net()
            pretrain(base, method, x, args.epochs, seed)
            for s in args.regimes:
                idx = labelled_subset(y, s, seed)
                score = finetune_and_test(copy.deepcopy(base), x, y, x_test, y_test, idx, seed, args.probe)
                acc.setdefault((method, s), []).append(score)
                print(f"seed {seed} {method:4s} {s:g}% labels ({len(idx)} images): {score:.1f}%", flush=True)
    print(f"\nTest accuracy (%), digits, mean ± std over seeds {args.seeds}\n")
    print("| pre-training | " + " | ".join(f"{s:g} % labels" for s in args.regimes) + " |")
    print("|---|" + "---:|" * len(args.regimes))
    for method in methods:
        cells = []
        for s in args.regimes:
            v = acc[method, s]
            cells.append(f"{statistics.mean(v):.1f} ± {statistics.stdev(v) if len(v) > 1 else 0:.1f}")
        print(f"| {method} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
