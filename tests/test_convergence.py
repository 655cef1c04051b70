"""Closed forms the rules must reach: principal components (HPCA) and cluster centres (SWTA)."""

import torch
from torch import nn

import hebbopt


def test_hpca_linear_finds_ordered_principal_components():
    d, k = 8, 3
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    variances = torch.tensor([9.0, 4.0, 2.0, 0.5, 0.3, 0.2, 0.1, 0.05], dtype=torch.float64)
    mix = q * variances.sqrt()  # covariance q diag(variances) qᵀ
    layer = nn.Linear(d, k, bias=False).double()
    opt = hebbopt.HPCAHebb(layer, lr=0.01, activation="identity")
    for _ in range(1500):
        layer(torch.randn(64, d, dtype=torch.float64) @ mix.T)
        opt.step()
    w = layer.weight.detach()
    for i in range(k):
        cos = (w[i] @ q[:, i]).abs() / w[i].norm()
        assert cos > 0.99, (i, cos.item())  # i-th weight = i-th principal component, in order
        assert abs(w[i].norm().item() - 1) < 0.05  # Sanger's rule normalises the weights


def test_swta_moves_weights_to_cluster_centres():
    d, k = 6, 4
    q, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64))
    centres = q[:k] * 3  # random, mutually orthogonal directions: well separated
    layer = nn.Linear(d, k, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(centres[torch.randperm(k)] + 0.8 * torch.randn(k, d, dtype=torch.float64))
    start = layer.weight.detach().clone()
    opt = hebbopt.SoftWTAHebb(layer, lr=0.05, temperature=0.02)
    for _ in range(400):
        labels = torch.randint(k, (128,))
        layer(centres[labels] + 0.05 * torch.randn(128, d, dtype=torch.float64))
        opt.step()
    w = layer.weight.detach()
    dist = torch.cdist(w, centres)  # every neuron on a distinct centre
    assert dist.min(dim=1).values.max() < 0.05, dist
    assert sorted(dist.argmin(dim=1).tolist()) == list(range(k))
    assert torch.cdist(start, centres).min(dim=1).values.max() > 0.3  # it did have to move
