"""``HebbianOptimizer``: bookkeeping around the pure rules in :mod:`hebbopt.rules`.

Forward hooks (:mod:`hebbopt.capture`) add each hooked layer's statistics into
``optimizer.state[weight]["stats"]``; :meth:`HebbianOptimizer.step` checks the sums of every layer,
then applies ``W ← W + lr·ΔW`` to each (the rule's ``apply_``) and clears the sums.
"""

from __future__ import annotations

import math
import types
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from hebbopt import capture, compiling, distributed
from hebbopt.rules import hpca, swta
from hebbopt.selection import HEBBIAN_TYPES, check_layer, hebbian_layers


class HebbianOptimizer(Optimizer):
    """Base class of the Hebbian optimizers: hooks layers, accumulates statistics, updates weights.

    Subclasses set :attr:`rule` (a module with ``statistics``, ``update`` and ``apply_``) and implement
    :meth:`rule_hyper` (the rule's keyword arguments from a param group) and
    :meth:`check_group`.

    Args:
        params: a model (its hidden Conv2d/Linear layers are hooked, see
            :func:`hebbopt.hebbian_layers`), one Conv2d/Linear, an iterable of such modules, a
            ``{name: module}`` dict (e.g. ``hebbian_layers(model, exclude=[...])``), or
            param-group dicts ``{"modules": any of these, "lr": ..., ...}``.
        defaults: default hyper-parameters of every group.
        compile: run the statistics and update functions under ``torch.compile``: ``True``,
            ``False`` or ``"auto"`` (compile for CUDA tensors, eager on the CPU where the first
            call of each layer shape would cost ~15 s of compilation).

    Raises:
        TypeError: ``params`` is not a model, a Conv2d/Linear, modules or param groups (e.g.
            ``model.parameters()``), or holds a layer the rules cannot hook.
        ValueError: ``compile`` is not ``True``, ``False`` or ``"auto"``, a hyper-parameter is
            invalid, there is no layer to hook, or a layer is given twice.
    """

    rule: types.ModuleType
    """The rule module (:mod:`hebbopt.rules.swta` or :mod:`hebbopt.rules.hpca`): its
    ``statistics`` runs in the hooks, its ``apply_`` in :meth:`step`."""

    def __init__(self, params: Any, defaults: dict[str, Any], compile: bool | str = "auto") -> None:
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        self.compile = compile
        self._layers: dict[nn.Parameter, _Layer] = {}
        super().__init__(_as_groups(params), defaults)

    # ------------------------------------------------------------------ param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group ``{"modules": model_or_modules, **hyper-parameters}`` and hook its layers.

        Hyper-parameters missing from the group take the optimizer's defaults.

        Args:
            param_group: ``{"modules": ..., "lr": ..., ...}``; ``"modules"`` is a model, a
                Conv2d/Linear, an iterable of them or a ``{name: module}`` dict.

        Raises:
            TypeError: no ``"modules"`` key, or a module that cannot be hooked.
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
        named = _named_layers(param_group["modules"], start=len(self._layers))
        for name, module in named.items():
            if module.weight in self._layers:
                raise ValueError(f"layer {name!r} is already hooked by this optimizer")
        self.check_group({**self.defaults, **group})
        group["params"] = [m.weight for m in named.values()]
        group["layers"] = list(named)
        super().add_param_group(group)
        for name, module in named.items():
            self._layers[module.weight] = _Layer(name, module, self)

    def check_group(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` for invalid hyper-parameters (``lr`` here; rules add theirs).

        Args:
            group: a param group with the defaults filled in.

        Raises:
            ValueError: ``lr`` is not a finite number > 0.
        """
        _check_positive("lr", group.get("lr"))

    def rule_hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        """Keyword arguments of ``rule.statistics`` taken from a param group.

        Args:
            group: the param group of the layer being captured.

        Returns:
            keyword arguments for the rule's ``statistics``.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ layers
    @property
    def layers(self) -> dict[str, nn.Module]:
        """The hooked layers by name, in the order they were added."""
        return {layer.name: layer.module for layer in self._layers.values()}

    def describe(self) -> str:
        """A table of the hooked layers: name, type, weight shape, group.

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
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(\n{self.describe()}\n)"

    def close(self) -> None:
        """Remove every forward hook; the model is plain again. Pending statistics are kept."""
        for layer in self._layers.values():
            layer.handle.remove()

    def __enter__(self) -> HebbianOptimizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ capture
    def _capture(self, layer: _Layer, x: torch.Tensor, output: torch.Tensor) -> None:
        module = layer.module
        x, output, geometry = capture.layer_inputs(module, x, output)
        fn = capture.batch_statistics
        if compiling.resolve(self.compile, x.device):
            fn = compiling.compiled(fn)
        bias = module.bias.detach() if module.bias is not None else None
        hyper = self.rule_hyper(self._group_of(layer.param))
        stats = fn(self.rule.statistics, x, output, bias, module.weight.detach(), geometry, hyper)
        # Keyed by the registered weight: if the module's weight was replaced, step() says so.
        state = self.state[layer.param]
        state["stats"] = capture.accumulate(state.get("stats"), stats)

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
        step, this is a no-op (but still takes part in that reduction). All updates are
        computed and checked before any weight changes, so an error leaves every weight as it was.

        Args:
            closure: optional callable that runs forward passes (under ``torch.no_grad()``)
                before the update; its return value is returned.

        Returns:
            the closure's return value, or ``None``.

        Raises:
            ValueError: a group's ``lr`` is negative or not finite, a layer's weight was
                replaced or changed shape since the forward pass (statistics are kept), or the
                processes of a distributed run hold statistics of different layers or shapes.
            FloatingPointError: statistics are not finite (NaN/Inf activations); the statistics
                of this step are discarded and no weight changes.
        """
        result = None
        if closure is not None:
            result = closure()  # under no_grad: Hebbian forwards need no autograd graph
        pending = []
        for group in self.param_groups:
            lr = group["lr"]
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
                raise ValueError(f"invalid learning rate {lr!r}: must be finite and ≥ 0")
            for p in group["params"]:
                stats = self.state[p].get("stats")
                if stats is not None:
                    self._check_current(self._layers[p], stats)
                    pending.append((group, p, stats))
        if distributed.active():
            # Every rank reduces (even with nothing captured) so that no rank waits alone.
            layers = [(layer.name, self.state[p].get("stats")) for p, layer in self._layers.items()]
            distributed.all_reduce_statistics(layers, next(iter(self._layers)).device)
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
        apply_ = self.rule.apply_
        if compiling.resolve(self.compile, pending[0][1].device):
            apply_ = compiling.compiled(apply_, dynamic=True)
        for group, p, stats in pending:
            # lr as a 0-d tensor: a compiled apply_ would otherwise recompile for every new lr.
            lr = torch.full(
                (), group["lr"], dtype=torch.promote_types(p.dtype, torch.float32), device=p.device
            )
            apply_(p.detach(), stats, lr)
            state = self.state[p]
            del state["stats"]
            state["step"] = state.get("step", 0) + 1
        return result

    def _check_current(self, layer: _Layer, stats: dict) -> None:
        if layer.module.weight is not layer.param:
            raise ValueError(
                f"the weight of layer {layer.name!r} was replaced by another Parameter after this "
                "optimizer was created; create the optimizer again for the new weights"
            )
        shapes = {tuple(v.shape) for v in stats.values() if isinstance(v, torch.Tensor) and v.dim() > 1}
        if shapes != {tuple(layer.param.shape)}:
            raise ValueError(
                f"layer {layer.name!r} has weight shape {tuple(layer.param.shape)} but its "
                f"statistics were captured for shape {shapes.pop()}; run the forward pass again "
                "after changing a layer"
            )


class _Layer:
    """One hooked layer: its name, module, registered weight and forward hook."""

    def __init__(self, name: str, module: nn.Module, optimizer: HebbianOptimizer) -> None:
        self.name, self.module, self.param = name, module, module.weight
        ref = weakref.ref(optimizer)
        this = weakref.ref(self)

        def hook(mod: nn.Module, args: tuple, output: torch.Tensor) -> None:
            opt, layer = ref(), this()
            if not mod.training or opt is None or layer is None:
                return
            # Statistics are plain tensors even under inference_mode (later forwards add into
            # them in place), never part of an autograd graph, and at least float32.
            with (
                torch.inference_mode(False),
                torch.no_grad(),
                torch.autocast(output.device.type, enabled=False),
            ):
                opt._capture(layer, args[0], output)

        self.handle = module.register_forward_hook(hook)


def _check_positive(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"invalid {name}: {value!r} (must be a finite number > 0)")


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


def _named_layers(modules: Any, start: int) -> dict[str, nn.Module]:
    if isinstance(modules, nn.Module):
        return hebbian_layers(modules)
    if isinstance(modules, Mapping):  # {name: module}, e.g. from hebbian_layers(model, exclude=...)
        for name, m in modules.items():
            check_layer(name, m)
        if not modules:
            raise ValueError("a param group has no modules")
        return dict(modules)
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
    return named


class SoftWTAHebb(HebbianOptimizer):
    r"""Soft winner-takes-all Hebbian learning (FastHebb eq. 1, 5, 6).

    ``ΔW_n = (Σ_b r²_bn x_b − Σ_b r²_bn · w_n) / Σ_b r_bn``, ``r = softmax(s / T)`` over neurons;
    see :mod:`hebbopt.rules.swta`.

    Args:
        params: model, modules or param groups (see :class:`HebbianOptimizer`).
        lr: learning rate η > 0.
        temperature: softmax temperature T > 0.
        similarity: ``"raised_cos2"`` (``((1 + cos(w, x)) / 2)²``, default) or ``"dot"``.
        compile: ``True``, ``False`` or ``"auto"`` (compile on CUDA only).

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

    rule = swta

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        temperature: float = 0.02,
        similarity: str = "raised_cos2",
        compile: bool | str = "auto",
    ) -> None:
        defaults = {"lr": lr, "temperature": temperature, "similarity": similarity}
        super().__init__(params, defaults, compile=compile)

    def check_group(self, group: dict[str, Any]) -> None:
        """Check ``lr`` and ``temperature`` (finite, > 0) and ``similarity``.

        Args:
            group: a param group with the defaults filled in.

        Raises:
            ValueError: an invalid ``lr``, ``temperature`` or ``similarity``.
        """
        super().check_group(group)
        _check_positive("temperature", group.get("temperature"))
        if group.get("similarity") not in swta.SIMILARITIES:
            raise ValueError(
                f"invalid similarity {group.get('similarity')!r}: choose one of {swta.SIMILARITIES}"
            )

    def rule_hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        """``temperature`` and ``similarity_kind`` for :func:`hebbopt.rules.swta.statistics`.

        Args:
            group: the param group of the layer being captured.

        Returns:
            ``{"temperature": T, "similarity_kind": similarity}``.
        """
        return {"temperature": float(group["temperature"]), "similarity_kind": group["similarity"]}


class HPCAHebb(HebbianOptimizer):
    r"""Hebbian PCA (Sanger's rule, FastHebb eq. 2, 7, 8).

    ``ΔW = (Yᵀ X − tril(Yᵀ Y) W) / B`` with ``Y = act(u)``; see :mod:`hebbopt.rules.hpca`.

    Args:
        params: model, modules or param groups (see :class:`HebbianOptimizer`).
        lr: learning rate η > 0.
        activation: ``"relu"`` (nonlinear Sanger rule, default) or ``"identity"`` (linear PCA).
        compile: ``True``, ``False`` or ``"auto"`` (compile on CUDA only).

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

    rule = hpca

    def __init__(
        self, params: Any, lr: float = 1e-3, activation: str = "relu", compile: bool | str = "auto"
    ) -> None:
        super().__init__(params, {"lr": lr, "activation": activation}, compile=compile)

    def check_group(self, group: dict[str, Any]) -> None:
        """Check ``lr`` (finite, > 0) and ``activation``.

        Args:
            group: a param group with the defaults filled in.

        Raises:
            ValueError: an invalid ``lr`` or ``activation``.
        """
        super().check_group(group)
        if group.get("activation") not in hpca.ACTIVATIONS:
            raise ValueError(
                f"invalid activation {group.get('activation')!r}: choose one of {hpca.ACTIVATIONS}"
            )

    def rule_hyper(self, group: dict[str, Any]) -> dict[str, Any]:
        """``activation_kind`` for :func:`hebbopt.rules.hpca.statistics`.

        Args:
            group: the param group of the layer being captured.

        Returns:
            ``{"activation_kind": activation}``.
        """
        return {"activation_kind": group["activation"]}


__all__ = ["HEBBIAN_TYPES", "HPCAHebb", "HebbianOptimizer", "SoftWTAHebb"]
