"""The Hebbian step as a function, under :class:`~hebbopt.optimizer.HebbianOptimizer` as
``torch.optim.sgd.sgd`` is under ``torch.optim.SGD``: the class fetches each layer's weight,
summed statistics, state, learning rate and hyper-parameters, and :func:`hebbian_step` applies

    W ← W + η·ΔW   (the rule's ``apply_``)

to every layer together, or to none: if any statistic, new weight or new state is not finite,
every weight is restored exactly and ``FloatingPointError`` is raised. Where the rule has a
``bound`` that proves the step finite before any weight changes (HPCA, soft-WTA), no copy of the
weights is kept; otherwise each weight is copied into a buffer that the caller keeps between steps
(a fresh weight-sized buffer per step costs page faults, +20–30 % of a step).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from hebbopt import checks, compiling
from hebbopt.rules import Rule


def hebbian_step(
    weights: Sequence[torch.Tensor],
    stats: Sequence[dict],
    states: Sequence[dict],
    lrs: Sequence[float | torch.Tensor],
    hypers: Sequence[dict],
    *,
    rule: Rule,
    names: Sequence[str],
    compile: bool | str = "auto",
    copies: list[torch.Tensor | None] | None = None,
    keep: bool = False,
) -> tuple[list[dict], list[torch.Tensor | None]]:
    """``W ← W + η·ΔW`` for every layer, all finite or none applied.

    Args:
        weights: each layer's weight (detached), updated in place.
        stats: each layer's summed statistics.
        states: each layer's rule state before the step (``{}`` for a stateless rule).
        lrs: each layer's learning rate η (a number or a 0-d tensor).
        hypers: each layer's ``apply_`` keyword arguments (``rule.kernel_kwargs(group)[1]``).
        rule: the :class:`~hebbopt.rules.Rule`.
        names: each layer's name, for the error.
        compile: ``True``, ``False`` or ``"auto"`` (compile for CUDA tensors only).
        copies: per layer, a buffer to copy the weight into before the step (``None``: made here);
            filled in place where a copy is made, for the caller to pass again at the next step.
        keep: copy the weights even where the rule's ``bound`` proves the step finite (for
            diagnostics that compare with them).

    Returns:
        ``(new states, the weights as they were)``: the states ``apply_`` returned (the given ones
        for a stateless rule), and each weight's copy from before the step, ``None`` where none
        was kept.

    Raises:
        FloatingPointError: a statistic, a new weight or a new state is not finite; every weight
            is then as it was before the call (the states passed in are untouched either way).
    """
    copies = [None] * len(weights) if copies is None else copies
    proven = not keep and proven_finite(weights, stats, lrs, hypers, rule=rule)
    apply = rule.apply
    if compiling.resolve(compile, weights[0].device):
        apply = compiling.compiled(apply, dynamic=True)
    before, new_states = [], []
    for i, (weight, st, state, lr, hyper) in enumerate(zip(weights, stats, states, lrs, hypers, strict=True)):
        if not proven:
            copies[i] = _copy_into(copies[i], weight)
        before.append(None if proven else copies[i])
        # lr as a 0-d tensor: a compiled apply_ would otherwise recompile for every new lr.
        lr = torch.as_tensor(lr, dtype=torch.promote_types(weight.dtype, torch.float32), device=weight.device)
        new_states.append(apply(weight, st, state, lr, **hyper))
    if not proven:
        stats_ok, weights_ok = checks.finite(stats, weights, new_states)
        if not (all(stats_ok) and all(weights_ok)):
            for weight, old in zip(weights, before, strict=True):
                weight.copy_(old)
            raise checks.non_finite_error(names, stats_ok, weights_ok, [float(lr) for lr in lrs])
    return new_states, before


def proven_finite(
    weights: Sequence[torch.Tensor],
    stats: Sequence[dict],
    lrs: Sequence[float | torch.Tensor],
    hypers: Sequence[dict],
    *,
    rule: Rule,
) -> bool:
    """Whether the rule's ``bound`` proves, before any weight changes, that every layer's
    statistics are finite and its new weight ``W + η·ΔW`` will be: the bound on ``max|W_new|``
    from ``max|W|`` is below a quarter of the dtype's largest value (one host sync).

    Args:
        weights: each layer's weight.
        stats: each layer's summed statistics.
        lrs: each layer's learning rate.
        hypers: each layer's ``apply_`` keyword arguments.
        rule: the rule (False at once where it has no ``bound``).

    Returns:
        True when the step is certain to be finite.
    """
    if rule.bound is None:
        return False
    flags = []
    for weight, st, lr, hyper in zip(weights, stats, lrs, hypers, strict=True):
        lo, hi = torch.aminmax(weight)
        absmax = torch.maximum(lo.float().abs(), hi.float().abs())
        lr = torch.as_tensor(lr, dtype=torch.float32, device=weight.device)
        flags.append(rule.bound(absmax, st, lr, **hyper) < torch.finfo(weight.dtype).max / 4)  # False for NaN
    return bool(torch.stack(flags).all())


def update_report(
    weight: torch.Tensor, before: torch.Tensor, won: torch.Tensor | None
) -> dict[str, torch.Tensor]:
    """One layer's diagnostics after a step, as 0-d tensors (no host sync).

    Args:
        weight: the weight after the step.
        before: the weight before it.
        won: which neurons ever won a sample (a rule with ``winners``), or None.

    Returns:
        ``{"update": max|ΔW| / max|W|, "norm": mean ‖w_n‖}``, and ``"ever_won"`` (the fraction of
        neurons that won) with ``won``.
    """
    entry = {
        "update": (weight - before).abs().max() / before.abs().max().clamp_min(1e-30),
        "norm": weight.flatten(1).float().norm(dim=1).mean(),
    }
    if won is not None:
        entry["ever_won"] = won.float().mean()
    return entry


def mark_winners(won: torch.Tensor | None, index: torch.Tensor, n: int) -> torch.Tensor:
    """``won`` with the neurons in ``index`` marked (a new all-False mask of ``n`` first, or when
    the layer changed its number of neurons).

    Args:
        won: the mask so far, or None.
        index: the winning neuron of each sample.
        n: the layer's number of neurons.

    Returns:
        The boolean mask of neurons that ever won.
    """
    if won is None or won.shape[0] != n:
        won = torch.zeros(n, dtype=torch.bool, device=index.device)
    return won.to(index.device).index_fill_(0, index.reshape(-1), True)


def _copy_into(buffer: torch.Tensor | None, weight: torch.Tensor) -> torch.Tensor:
    if buffer is None or (buffer.shape, buffer.dtype, buffer.device) != (
        weight.shape,
        weight.dtype,
        weight.device,
    ):
        buffer = torch.empty_like(weight)
    return buffer.copy_(weight)
