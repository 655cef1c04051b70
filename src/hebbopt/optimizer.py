"""``HebbianOptimizer``: bookkeeping around the pure rules in :mod:`hebbopt.rules`.

Forward hooks (:class:`hebbopt.capture.CaptureHook`) add each hooked layer's statistics into
``optimizer.state[weight]["stats"]``; :meth:`HebbianOptimizer.step` checks the sums of every layer,
then applies ``W ← W + lr·ΔW`` to each (the rule's ``apply_``) and clears the sums. The rule is any
entry of :data:`hebbopt.rules.RULES` (or a user's :class:`~hebbopt.rules.Rule`); the named classes
(:class:`SoftWTAHebb`, :class:`HPCAHebb`, ...) only fix the rule and spell out its
hyper-parameters.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from hebbopt import capture, compiling, distributed
from hebbopt.rules import Rule, get_rule
from hebbopt.rules.base import _real
from hebbopt.selection import HEBBIAN_TYPES, check_layer, hebbian_layers, unsupported_layers


class HebbianOptimizer(Optimizer):
    """A Hebbian rule as a ``torch.optim.Optimizer``: hooks layers, sums statistics, updates weights.

    Args:
        params: a model (its hidden Conv2d/Linear layers are hooked, see
            :func:`hebbopt.hebbian_layers`; layers it cannot hook are skipped and listed by
            :meth:`describe`), one Conv2d/Linear, an iterable of such modules, a
            ``{name: module}`` dict (e.g. ``hebbian_layers(model, exclude=[...])``), or
            param-group dicts ``{"modules": any of these, "lr": ..., ...}``.
        rule: a name in :data:`hebbopt.rules.RULES` (``"swta"``, ``"hpca"``, ...) or a
            :class:`~hebbopt.rules.Rule`.
        lr: learning rate η ≥ 0: a real number or a 0-d tensor.
        compile: run the statistics and update functions under ``torch.compile``: ``True``,
            ``False`` or ``"auto"`` (compile for CUDA tensors, eager on the CPU where the first
            call of each layer shape would cost ~15 s of compilation).
        diagnostics: after each :meth:`step`, record per layer ``max|ΔW| / max|W|`` and the mean
            neuron norm ``‖w_n‖`` in :attr:`last_update` (costs one weight copy per layer), and
            for a competitive rule (one with ``winners``: swta, softhebb, krotov) the fraction of
            neurons that ever won a sample (costs one argmax per forward pass).
        **hyper: the rule's hyper-parameters (``RULES[rule].hyper``), e.g. ``temperature=0.1``.

    Raises:
        TypeError: ``params`` is not a model, a Conv2d/Linear, modules or param groups (e.g.
            ``model.parameters()``), holds a layer the rules cannot hook, or ``hyper`` names a
            hyper-parameter the rule does not have.
        ValueError: ``compile`` is not ``True``, ``False`` or ``"auto"``, an unknown rule, an
            invalid hyper-parameter, no layer to hook, or a layer given twice.

    Examples:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Linear(16, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> opt = HebbianOptimizer(net, rule="oja", lr=1e-2)
        >>> with torch.no_grad():
        ...     _ = net(torch.randn(32, 16))
        >>> opt.step()
    """

    def __init__(
        self,
        params: Any,
        rule: str | Rule = "hpca",
        lr: float | torch.Tensor = 1e-3,
        *,
        compile: bool | str = "auto",
        diagnostics: bool = False,
        **hyper: Any,
    ) -> None:
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        self.rule: Rule = get_rule(rule)
        """The :class:`~hebbopt.rules.Rule`: its ``statistics`` run in the hooks, its ``apply_``
        in :meth:`step`."""
        self.compile = compile
        self.diagnostics = diagnostics
        self.last_update: dict[str, dict[str, torch.Tensor]] = {}
        """Per layer after each :meth:`step` (with ``diagnostics=True``): ``"update"`` =
        max|ΔW| / max|W| and ``"norm"`` = mean ‖w_n‖, as 0-d tensors (no host sync). For a rule
        with ``winners``, also ``"ever_won"``: the fraction of the layer's neurons that won at
        least one sample (image or position) of the forward passes captured with diagnostics on,
        since the optimizer was made; it is kept in ``state[weight]["won"]``, so it survives
        :meth:`state_dict` / :meth:`load_state_dict`, and counts this process's samples only."""
        self._layers: dict[nn.Parameter, _Layer] = {}
        self._skipped: dict[str, str] = {}
        self._warned: set[str] = set()
        # Per weight: weight-shaped statistics already applied, free to be overwritten by the next
        # forward's (see hebbopt.rules.geometry.reusing); never in state or state_dict.
        self._spare: dict[nn.Parameter, list[torch.Tensor]] = {}
        _learning_rate(lr)
        super().__init__(_as_groups(params), {"lr": lr, **self.rule.defaults(**hyper)})

    # ------------------------------------------------------------------ param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group ``{"modules": model_or_modules, **hyper-parameters}`` and hook its layers.

        Hyper-parameters missing from the group take the optimizer's defaults. A layer name that
        another group already uses gets the prefix ``group<i>.``.

        Args:
            param_group: ``{"modules": ..., "lr": ..., ...}``; ``"modules"`` is a model, a
                Conv2d/Linear, an iterable of them or a ``{name: module}`` dict.

        Raises:
            TypeError: no ``"modules"`` key, a module that cannot be hooked, or a key that is
                not a hyper-parameter of the rule.
            ValueError: invalid hyper-parameters, or a layer already hooked by this optimizer.
        """
        if not isinstance(param_group, dict) or "modules" not in param_group:
            raise TypeError(
                f"{type(self).__name__} param groups are dicts with a 'modules' key "
                "(a model or Conv2d/Linear modules), e.g. {'modules': [model.conv1], 'lr': 1e-3}"
            )
        group = {k: v for k, v in param_group.items() if k != "modules"}
        if "params" in group:
            raise TypeError("give a param group 'modules', not 'params': the rules need the layers")
        unknown = set(group) - {"lr", *self.rule.hyper}
        if unknown:
            raise TypeError(
                f"param group keys {sorted(unknown)} are not hyper-parameters of rule "
                f"{self.rule.name!r} (lr, {', '.join(self.rule.hyper) or 'no others'})"
            )
        named, skipped = _named_layers(param_group["modules"], start=len(self._layers))
        for name, module in named.items():
            if module.weight in self._layers:
                raise ValueError(f"layer {name!r} is already hooked by this optimizer")
        taken = set(self.layers) | set(self._skipped)
        if taken & (set(named) | set(skipped)):
            prefix = f"group{len(self.param_groups)}."
            named = {prefix + n: m for n, m in named.items()}
            skipped = {prefix + n: r for n, r in skipped.items()}
        full = {**self.defaults, **group}
        _learning_rate(full["lr"])
        self.rule.check(full, tuple(m.weight for m in named.values()))
        group["params"] = [m.weight for m in named.values()]
        group["layers"] = list(named)
        group["rule"] = self.rule.name
        super().add_param_group(group)
        self._skipped.update(skipped)
        for name, module in named.items():
            self._layers[module.weight] = _Layer(name, module, self)

    # ------------------------------------------------------------------ layers
    @property
    def layers(self) -> dict[str, nn.Module]:
        """The hooked layers by name, in the order they were added."""
        return {layer.name: layer.module for layer in self._layers.values()}

    @property
    def skipped(self) -> dict[str, str]:
        """Layers of the given models that were not hooked, with the reason (see
        :func:`hebbopt.selection.unsupported_layers`)."""
        return dict(self._skipped)

    def describe(self) -> str:
        """A table of the hooked layers (name, type, weight shape, group), then the skipped ones.

        Returns:
            the table as text, one layer per line after a header.

        Examples:
            >>> import torch.nn as nn
            >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(288, 16), nn.Linear(16, 2))
            >>> print(HPCAHebb(net).describe())
            layer  type    weight   group
            0      Conv2d  8×3×3×3  0
            2      Linear  16×288   0
        """
        rows = [("layer", "type", "weight", "group")]
        for gi, group in enumerate(self.param_groups):
            for p in group["params"]:
                layer = self._layers[p]
                rows.append((layer.name, type(layer.module).__name__, "×".join(map(str, p.shape)), str(gi)))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines += [f"skipped {name}: {reason}" for name, reason in self._skipped.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule={self.rule.name!r},\n{self.describe()}\n)"

    def close(self) -> None:
        """Remove every forward hook; the model is plain again. Pending statistics are kept."""
        for layer in self._layers.values():
            layer.handle.remove()
        self._spare.clear()

    def __enter__(self) -> HebbianOptimizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ capture
    def _group_of(self, param: nn.Parameter) -> dict[str, Any]:
        # Looked up each time: load_state_dict() replaces the group dicts.
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        raise RuntimeError("a hooked weight belongs to no param group")

    # ------------------------------------------------------------------ step
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Does nothing: Hebbian updates never read ``.grad``, and gradients belong to backprop.

        Kept so scripts that call ``optimizer.zero_grad()`` for every optimizer keep working.

        Args:
            set_to_none: ignored (accepted for ``torch.optim.Optimizer`` compatibility).
        """

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        """Apply ``W ← W + lr·ΔW`` to every layer with captured statistics, then clear them.

        Under ``torch.distributed`` (e.g. ``accelerate launch``), the statistics are first summed
        over all processes, so every process applies the update of the global batch; every
        process must call ``step()`` together. Without any captured forward pass since the last
        step, this is a no-op (but still takes part in that reduction; a warning says so once if
        hooked layers were in eval mode). All updates are computed and checked before any weight
        changes, so an error leaves every weight as it was.

        Args:
            closure: optional callable that runs forward passes (under ``torch.no_grad()``)
                before the update; its return value is returned.

        Returns:
            the closure's return value, or ``None``.

        Raises:
            ValueError: a group's ``lr`` or another hyper-parameter is invalid (e.g. edited by
                hand), a layer's weight was replaced or changed shape since the forward pass
                (statistics are kept), or the processes of a distributed run hold statistics of
                different layers or shapes.
            FloatingPointError: statistics are not finite (NaN/Inf activations); the statistics
                of this step are discarded and no weight changes.
        """
        result = None
        if closure is not None:
            result = closure()  # under no_grad: Hebbian forwards need no autograd graph
        pending = []
        for group in self.param_groups:
            _learning_rate(group["lr"])
            self.rule.check(group, tuple(group["params"]))
            for p in group["params"]:
                stats = self.state[p].get("stats")
                if stats is not None:
                    self._check_current(self._layers[p], stats)
                    pending.append((group, p, stats))
        if distributed.active():
            # Every rank reduces (even with nothing captured) so that no rank waits alone.
            layers = [(layer.name, self.state[p].get("stats")) for p, layer in self._layers.items()]
            distributed.all_reduce_statistics(layers, next(iter(self._layers)).device)
        self._warn_missing(bool(pending))
        if not pending:
            return result
        # A sum is non-finite iff some element is (or, harmlessly, if ~1e38 values overflow): one
        # reduction per statistic instead of an element-wise isfinite pass, and one host sync.
        # With finite statistics (and weights) the update is finite.
        sums = [
            sum(v.sum() for v in stats.values() if isinstance(v, torch.Tensor)) for _, _, stats in pending
        ]
        finite = torch.isfinite(torch.stack(sums)).tolist()
        if not all(finite):
            bad = [self._layers[p].name for (_, p, _), ok in zip(pending, finite, strict=True) if not ok]
            for _, p, _ in pending:
                del self.state[p]["stats"]
            raise FloatingPointError(
                f"non-finite Hebbian statistics for layer(s) {bad} (NaN/Inf in activations or "
                "weights); no weight was changed and this step's statistics were discarded"
            )
        apply = self.rule.apply
        if compiling.resolve(self.compile, pending[0][1].device):
            apply = compiling.compiled(apply, dynamic=True)
        for group, p, stats in pending:
            _, apply_kwargs = self.rule.kernel_kwargs(group)
            # lr as a 0-d tensor: a compiled apply_ would otherwise recompile for every new lr.
            dtype = torch.promote_types(p.dtype, torch.float32)
            lr = torch.as_tensor(group["lr"], dtype=dtype, device=p.device)
            weight = p.detach()
            before = weight.clone() if self.diagnostics else None
            apply(weight, stats, lr, **apply_kwargs)
            state = self.state[p]
            if before is not None:
                entry = {
                    "update": (weight - before).abs().max() / before.abs().max().clamp_min(1e-30),
                    "norm": weight.flatten(1).float().norm(dim=1).mean(),
                }
                if "won" in state:
                    entry["ever_won"] = state["won"].float().mean()
                self.last_update[self._layers[p].name] = entry
            del state["stats"]
            self._spare[p] = [v for k, v in stats.items() if k in self.rule.weight_shaped]
            state["step"] = state.get("step", 0) + 1
        return result

    def _check_current(self, layer: _Layer, stats: dict) -> None:
        if layer.module.weight is not layer.param:
            raise ValueError(
                f"the weight of layer {layer.name!r} was replaced by another Parameter after this "
                "optimizer was created; create the optimizer again for the new weights"
            )
        captured = self.state[layer.param].get("shape")
        if captured is not None and tuple(captured) != tuple(layer.param.shape):
            raise ValueError(
                f"layer {layer.name!r} has weight shape {tuple(layer.param.shape)} but its "
                f"statistics were captured for shape {tuple(captured)}; run the forward pass again "
                "after changing a layer"
            )

    def _warn_missing(self, captured_any: bool) -> None:
        if captured_any and "never" not in self._warned:
            never = [
                layer.name
                for layer in self._layers.values()
                if not layer.captured and "stats" not in self.state[layer.param]
            ]
            if never:
                self._warned.add("never")
                warnings.warn(
                    f"hooked layer(s) {never} captured nothing while others did: their forward "
                    "never ran (e.g. a module called through F.linear, like "
                    "nn.MultiheadAttention.out_proj); they are not trained",
                    stacklevel=3,
                )
        if not captured_any and "eval" not in self._warned:
            idle = [layer.name for layer in self._layers.values() if not layer.module.training]
            if idle:
                self._warned.add("eval")
                warnings.warn(
                    f"step() with nothing captured: layer(s) {idle} are in eval mode, and hooks "
                    "capture in training mode only; call model.train() before Hebbian forwards",
                    stacklevel=3,
                )

    # ------------------------------------------------------------------ state
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict`: hyper-parameters, step counts, pending statistics, winners.

        Pending statistics and the neurons that ever won keep the dtype they were saved with
        (``torch.optim`` would cast them to each weight's dtype, e.g. float32 sums of a bf16
        model to bf16, booleans to floats).

        Args:
            state_dict: from :meth:`state_dict` of an optimizer of the same rule and layers.

        Raises:
            ValueError: the state is of another rule or another set of layers (both named).
        """
        self._spare.clear()
        saved = state_dict["param_groups"]
        rules = {g.get("rule", self.rule.name) for g in saved}
        if rules != {self.rule.name}:
            raise ValueError(
                f"this state_dict holds rule {sorted(rules)} but this optimizer runs rule "
                f"{self.rule.name!r}; load it into an optimizer of the same rule"
            )
        theirs = [list(g.get("layers", [])) for g in saved]
        ours = [list(g["layers"]) for g in self.param_groups]
        if theirs != ours:
            raise ValueError(
                f"this state_dict is of the layers {theirs} but this optimizer hooks {ours} "
                "(by group); build the optimizer over the same layers"
            )
        stats, won = {}, {}
        for index, entry in state_dict["state"].items():
            if "stats" in entry:
                stats[index] = entry["stats"]
            if "won" in entry:
                won[index] = entry["won"]
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for index, saved_stats in stats.items():
            p = params[index]
            self.state[p]["stats"] = {
                k: v.to(device=p.device, copy=True) if isinstance(v, torch.Tensor) else v
                for k, v in saved_stats.items()
            }
        for index, saved_won in won.items():
            p = params[index]
            self.state[p]["won"] = saved_won.to(device=p.device, dtype=torch.bool, copy=True)


class _Layer:
    """One hooked layer: its name, module, registered weight and forward hook."""

    def __init__(self, name: str, module: nn.Module, optimizer: HebbianOptimizer) -> None:
        self.name, self.module, self.param = name, module, module.weight
        self.captured = False
        self.handle = module.register_forward_hook(capture.CaptureHook(optimizer, self), with_kwargs=True)


def _learning_rate(lr: Any) -> float:
    value = _real(lr)
    if value is None or not math.isfinite(value) or value < 0:
        raise ValueError(
            f"invalid learning rate {lr!r}: must be a finite number ≥ 0 (a float, or a 0-d tensor)"
        )
    return value


def _as_groups(params: Any) -> list[dict[str, Any]]:
    if isinstance(params, (nn.Module, Mapping)):
        return [{"modules": params}]
    if isinstance(params, torch.Tensor):
        raise TypeError("Hebbian optimizers take a model or its layers, not tensors")
    if not isinstance(params, Iterable):
        raise TypeError(f"expected a model, modules or param-group dicts, got {type(params).__name__}")
    items = list(params)
    if not items:
        raise ValueError("no modules given: pass a model, Conv2d/Linear modules or param groups")
    if all(isinstance(g, dict) for g in items):
        return items
    if any(isinstance(g, torch.Tensor) for g in items):
        raise TypeError(
            "Hebbian optimizers take the model or its modules, not parameters: "
            "use HPCAHebb(model), not HPCAHebb(model.parameters())"
        )
    return [{"modules": items}]


def _named_layers(modules: Any, start: int) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """``({name: layer} to hook, {name: reason} skipped)`` of a param group's ``"modules"``."""
    if isinstance(modules, nn.Module):
        skipped = {} if isinstance(modules, HEBBIAN_TYPES) else unsupported_layers(modules)
        return hebbian_layers(modules), skipped
    if isinstance(modules, Mapping):  # {name: module}, e.g. from hebbian_layers(model, exclude=...)
        for name, m in modules.items():
            check_layer(name, m)
        if not modules:
            raise ValueError("a param group has no modules")
        return dict(modules), {}
    if isinstance(modules, torch.Tensor) or not isinstance(modules, Iterable):
        raise TypeError(f"'modules' must be a model or an iterable of modules, got {type(modules).__name__}")
    named = {}
    for i, m in enumerate(modules):
        name = f"layer{start + i}"
        check_layer(name, m)
        named[name] = m
    if not named:
        raise ValueError("a param group has no modules")
    if len({id(m) for m in named.values()}) != len(named):
        raise ValueError("the same module appears twice in a param group")
    return named, {}


class SoftWTAHebb(HebbianOptimizer):
    r"""Soft winner-takes-all Hebbian learning (FastHebb eq. 1, 5, 6): rule ``"swta"``.

    ``ΔW_n = (Σ_b r²_bn x_b − Σ_b r²_bn · w_n) / Σ_b r_bn``, ``r = softmax(s / T)`` over neurons;
    see :mod:`hebbopt.rules.swta`.

    Args:
        params: model, modules or param groups (see :class:`HebbianOptimizer`).
        lr: learning rate η ≥ 0 (a number or a 0-d tensor).
        temperature: softmax temperature T > 0.
        similarity: ``"raised_cos2"`` (``((1 + cos(w, x)) / 2)²``, default) or ``"dot"``.
        compile: ``True``, ``False`` or ``"auto"`` (compile on CUDA only).
        diagnostics: record :attr:`~HebbianOptimizer.last_update` after each step.

    Raises:
        TypeError: something that is not a model, a Conv2d/Linear or a param group (e.g.
            ``model.parameters()``), or a layer the rules cannot hook (see
            :func:`hebbopt.selection.check_layer`).
        ValueError: an invalid hyper-parameter, no layer to hook, or a layer given twice.

    Examples:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
        >>> opt = SoftWTAHebb(net, lr=1e-2)
        >>> with torch.no_grad():
        ...     _ = net(torch.randn(4, 3, 8, 8))
        >>> opt.step()
        >>> opt.close()
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        temperature: float = 0.02,
        similarity: str = "raised_cos2",
        compile: bool | str = "auto",
        diagnostics: bool = False,
    ) -> None:
        super().__init__(
            params, "swta", lr, compile=compile, diagnostics=diagnostics,
            temperature=temperature, similarity=similarity,
        )  # fmt: skip


class HPCAHebb(HebbianOptimizer):
    r"""Hebbian PCA (Sanger's rule, FastHebb eq. 2, 7, 8): rule ``"hpca"``.

    ``ΔW = (Yᵀ X − tril(Yᵀ Y) W) / B`` with ``Y = act(u)``; see :mod:`hebbopt.rules.hpca`.

    Args:
        params: model, modules or param groups (see :class:`HebbianOptimizer`).
        lr: learning rate η ≥ 0 (a number or a 0-d tensor).
        activation: ``"relu"`` (nonlinear Sanger rule, default) or ``"identity"`` (linear PCA).
        compile: ``True``, ``False`` or ``"auto"`` (compile on CUDA only).
        diagnostics: record :attr:`~HebbianOptimizer.last_update` after each step.

    Raises:
        TypeError: something that is not a model, a Conv2d/Linear or a param group (e.g.
            ``model.parameters()``), or a layer the rules cannot hook (see
            :func:`hebbopt.selection.check_layer`).
        ValueError: an invalid hyper-parameter, no layer to hook, or a layer given twice.

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

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor = 1e-3,
        activation: str = "relu",
        compile: bool | str = "auto",
        diagnostics: bool = False,
    ) -> None:
        super().__init__(params, "hpca", lr, compile=compile, diagnostics=diagnostics, activation=activation)


class SoftHebb(HebbianOptimizer):
    r"""SoftHebb (Journé et al., ICLR 2023): rule ``"softhebb"``.

    The soft winner is Hebbian, the other neurons anti-Hebbian; the summed update is normalised
    by its largest entry and each neuron's rate shrinks as ‖w_n‖ → 1; see
    :mod:`hebbopt.rules.softhebb`.

    Args:
        params: model, modules or param groups (see :class:`HebbianOptimizer`).
        lr: learning rate η ≥ 0 (a number or a 0-d tensor).
        temperature: softmax temperature T > 0 (the paper's ``1 / t_invert``).
        power_lr: per-neuron rate ``η (|‖w_n‖ − 1| + 1e-10)^power_lr``; 0 turns it off.
        compile: ``True``, ``False`` or ``"auto"`` (compile on CUDA only).
        diagnostics: record :attr:`~HebbianOptimizer.last_update` after each step.

    Raises:
        TypeError: something that is not a model, a Conv2d/Linear or a param group.
        ValueError: an invalid hyper-parameter, no layer to hook, or a layer given twice.
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor,
        temperature: float = 1.0,
        power_lr: float = 0.5,
        compile: bool | str = "auto",
        diagnostics: bool = False,
    ) -> None:
        super().__init__(
            params, "softhebb", lr, compile=compile, diagnostics=diagnostics,
            temperature=temperature, power_lr=power_lr,
        )  # fmt: skip


class KrotovHebb(HebbianOptimizer):
    r"""Krotov–Hopfield competing hidden units (PNAS 2019): rule ``"krotov"``.

    The top-ranked neuron by ``I = (sign(W)|W|^(p−1))·x`` is Hebbian, the k-th ranked gets −Δ; the
    summed update is normalised by its largest entry; see :mod:`hebbopt.rules.krotov`. The paper's
    annealed ε is ``lr`` with a ``LambdaLR`` scheduler.

    Args:
        params: model, modules or param groups (see :class:`HebbianOptimizer`).
        lr: learning rate ε ≥ 0 (a number or a 0-d tensor).
        p: Lebesgue exponent p ≥ 1.
        k: the rank pushed away, 2 ≤ k ≤ number of neurons.
        delta: anti-Hebbian strength Δ ≥ 0.
        compile: ``True``, ``False`` or ``"auto"`` (compile on CUDA only).
        diagnostics: record :attr:`~HebbianOptimizer.last_update` after each step.

    Raises:
        TypeError: something that is not a model, a Conv2d/Linear or a param group.
        ValueError: an invalid hyper-parameter (``k`` larger than a layer's neurons included), no
            layer to hook, or a layer given twice.
    """

    def __init__(
        self,
        params: Any,
        lr: float | torch.Tensor,
        p: float = 2.0,
        k: int = 2,
        delta: float = 0.4,
        compile: bool | str = "auto",
        diagnostics: bool = False,
    ) -> None:
        super().__init__(
            params, "krotov", lr, compile=compile, diagnostics=diagnostics, p=p, k=k, delta=delta
        )


NAMED = {"swta": SoftWTAHebb, "hpca": HPCAHebb, "softhebb": SoftHebb, "krotov": KrotovHebb}
"""The named optimizer class of each rule that has one (every rule works with
:class:`HebbianOptimizer` itself)."""

__all__ = ["HEBBIAN_TYPES", "NAMED", "HPCAHebb", "HebbianOptimizer", "KrotovHebb", "SoftHebb", "SoftWTAHebb"]
