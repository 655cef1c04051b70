"""A named optimizer class for every shipped rule: thin aliases of
:class:`~hebbopt.optimizer.HebbianOptimizer` that fix the rule.

``SoftWTAHebb(model, lr=0.01, temperature=0.1)`` is ``HebbianOptimizer(model, "swta", lr=0.01,
temperature=0.1)``: the hyper-parameters, their defaults and their checks are the rule's own
(``RULES[name].hyper``, one source, tabled per rule in the rules page); a name the rule does not
have is refused with the nearest valid one. Each class takes ``(params, lr=1e-3, **kwargs)``:
``params`` a model, modules or param groups, ``lr`` the learning rate η ≥ 0 (a number or a 0-d
tensor), ``kwargs`` the rule's hyper-parameters and ``compile``, ``diagnostics``,
``statistics_dtype`` (see :class:`~hebbopt.optimizer.HebbianOptimizer`).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from hebbopt.optimizer import HebbianOptimizer


class _Named(HebbianOptimizer):
    rule_name: ClassVar[str]

    def __init__(self, params: Any, lr: float | torch.Tensor = 1e-3, **kwargs: Any) -> None:
        super().__init__(params, self.rule_name, lr, **kwargs)


class SoftWTAHebb(_Named):
    r"""Soft winner-takes-all Hebbian learning (FastHebb eq. 1, 5, 6): rule ``"swta"``.

    ``ΔW_n = (Σ_b r²_bn x_b − Σ_b r²_bn · w_n) / Σ_b r_bn``, ``r = softmax(s / T)`` over neurons;
    see :mod:`hebbopt.rules.swta`. Hyper-parameters: ``temperature`` (T), ``similarity``.


    Examples:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
        >>> opt = SoftWTAHebb(net, lr=1e-2, temperature=0.1)
        >>> with torch.no_grad():
        ...     _ = net(torch.randn(4, 3, 8, 8))
        >>> opt.step()
        >>> opt.close()
    """

    rule_name = "swta"


class HPCAHebb(_Named):
    r"""Hebbian PCA (Sanger's rule, FastHebb eq. 2, 7, 8): rule ``"hpca"``.

    ``ΔW = (Yᵀ X − tril(Yᵀ Y) W) / B`` with ``Y = act(u)``; see :mod:`hebbopt.rules.hpca`.
    Hyper-parameter: ``activation``.


    Examples:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> opt = HPCAHebb(net, lr=1e-2)
        >>> list(opt.layers)
        ['0']
        >>> with torch.no_grad():
        ...     _ = net(torch.randn(32, 16))
        >>> opt.step()
    """

    rule_name = "hpca"


class SoftHebb(_Named):
    r"""SoftHebb (Journé et al., ICLR 2023): rule ``"softhebb"``.

    The soft winner is Hebbian, the other neurons anti-Hebbian; the summed update is normalised
    by its largest entry and each neuron's rate shrinks as ‖w_n‖ → 1; see
    :mod:`hebbopt.rules.softhebb`. Hyper-parameters: ``temperature`` (T, the paper's
    ``1 / t_invert``), ``power_lr``.

    """

    rule_name = "softhebb"


class KrotovHebb(_Named):
    r"""Krotov–Hopfield competing hidden units (PNAS 2019): rule ``"krotov"``.

    The top-ranked neuron by ``I = (sign(W)|W|^(p−1))·x`` is Hebbian, the k-th ranked gets −Δ; the
    summed update is normalised by its largest entry; see :mod:`hebbopt.rules.krotov`. The paper's
    annealed ε is ``lr`` with a ``LambdaLR`` scheduler. Hyper-parameters: ``p``, ``k``, ``delta``.

    """

    rule_name = "krotov"


class OjaHebb(_Named):
    r"""Oja's rule for many neurons (Oja 1982): rule ``"oja"``.

    ``ΔW_n = (Σ_b y_bn x_b − (Σ_b y²_bn) w_n) / B`` with ``y = w·x``; see :mod:`hebbopt.rules.oja`.
    No hyper-parameter but the learning rate.

    """

    rule_name = "oja"


class BCMHebb(_Named):
    r"""BCM (Bienenstock, Cooper, Munro 1982), a sliding threshold θ kept across steps: rule ``"bcm"``.

    ``ΔW = (1/N) Σ_n (u_n ⊙ (u_n − θ)) x_nᵀ``, then ``θ ← θ + (mean_n u_n² − θ) / τ``; see
    :mod:`hebbopt.rules.bcm`. Hyper-parameter: ``tau``.

    """

    rule_name = "bcm"


NAMED: dict[str, type[HebbianOptimizer]] = {
    cls.rule_name: cls for cls in (SoftWTAHebb, HPCAHebb, SoftHebb, KrotovHebb, OjaHebb, BCMHebb)
}
"""The named optimizer class of each shipped rule (every rule, a user's too, works with
:class:`~hebbopt.optimizer.HebbianOptimizer` itself)."""
