"""``HebbianOptimizer``: bookkeeping around the pure rules in :mod:`hebbopt.rules`.

Forward hooks (:class:`hebbopt.capture.CaptureHook`) hand each hooked layer's activations to the
optimizer, which adds their statistics into ``optimizer.state[weight]["stats"]``;
:meth:`HebbianOptimizer.step` applies ``W ← W + lr·ΔW`` to each layer (the rule's ``apply_``),
stores any new rule state and clears the sums. This module is the bookkeeping (param groups,
state, capture); the step's maths is :func:`hebbopt.functional.hebbian_step`, the checks are in
:mod:`hebbopt.checks`, the layers and their report in :mod:`hebbopt.layers`. The rule is any
entry of :data:`hebbopt.rules.RULES` (or a user's :class:`~hebbopt.rules.Rule`); the named classes
of :mod:`hebbopt.named` (:class:`~hebbopt.named.SoftWTAHebb`, ...) only fix the rule.
"""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

from hebbopt import capture, checks, compiling, distributed, functional
from hebbopt.copies import HookedCopies, to_device
from hebbopt.layers import HookedLayer, as_groups, named_layers, report
from hebbopt.rules import Rule, get_rule

STATISTICS_DTYPES = (None, torch.float32, torch.float64, torch.bfloat16, torch.float16)
"""The values ``statistics_dtype`` takes (``None``: at least float32)."""


class HebbianOptimizer(HookedCopies, Optimizer):
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
        statistics_dtype: the dtype the rule's statistics are computed in: ``None`` (the
            default: the activations' dtype promoted to at least float32, exact with respect to
            the activations) or ``torch.bfloat16`` / ``torch.float16`` (each batch's products in
            that dtype, rounded once per batch, then summed over batches in float32: about twice
            as fast on a CPU with bf16 units, for forward passes under bf16 autocast).
        **hyper: the rule's hyper-parameters (``RULES[rule].hyper``), e.g. ``temperature=0.1``.

    Raises:
        TypeError: ``params`` is not a model, a Conv2d/Linear, modules or param groups (e.g.
            ``model.parameters()``), or holds a layer the rules cannot hook.
        ValueError: ``compile`` is not ``True``, ``False`` or ``"auto"``, ``statistics_dtype`` is
            not ``None`` or a floating dtype (``torch.float32``, ``float64``, ``bfloat16``,
            ``float16``), an unknown rule, an invalid hyper-parameter, no layer to hook, a layer
            given twice, or a layer that another optimizer hooks and was not closed.
        UnknownHyperParameterError: ``hyper`` or a param group names a hyper-parameter the rule
            does not have (a ``ValueError`` and a ``TypeError``; the nearest valid name is
            suggested).

    Copies: ``copy.deepcopy((model, optimizer))`` and a pickle of both hook the copied model's
    layers; the optimizer alone is not deep-copied (see :mod:`hebbopt.copies`). To resume
    elsewhere, prefer ``state_dict()`` / :meth:`load_state_dict`.

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
        statistics_dtype: torch.dtype | None = None,
        **hyper: Any,
    ) -> None:
        if compile not in (True, False, "auto"):
            raise ValueError(f"compile must be True, False or 'auto', got {compile!r}")
        if statistics_dtype not in STATISTICS_DTYPES:
            raise ValueError(
                f"statistics_dtype must be one of {list(STATISTICS_DTYPES)}, got {statistics_dtype!r} "
                "(None: at least float32, exact; torch.bfloat16: faster products rounded once per batch)"
            )
        self.statistics_dtype = statistics_dtype
        """The dtype the rule's statistics are computed in (``None``: at least float32)."""
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
        ``state_dict()`` / :meth:`load_state_dict`, and counts this process's samples only."""
        self._layers: dict[nn.Parameter, HookedLayer] = {}
        self._skipped: dict[str, str] = {}
        self._heads: list[str] = []  # describe()'s lines on the classifier of each model given
        self._warned: set[str] = set()
        self._closed = False
        # Per weight: weight-shaped statistics already applied, free to be overwritten by the next
        # forward's (the ``out`` of hebbopt.rules.geometry.patch_sum); never in state or state_dict.
        self._spare: dict[nn.Parameter, list[torch.Tensor]] = {}
        self._group_index: dict[nn.Parameter, int] = {}  # each hooked weight's param group
        self._checked: dict[nn.Parameter, tuple] = {}  # (group, values, statistics kwargs) last checked
        # the weights as they were before the step, to restore on a non-finite one: kept between
        # steps because a fresh weight-sized buffer per step costs page faults (+20-30 % of a step)
        self._before: dict[nn.Parameter, torch.Tensor] = {}
        checks.learning_rate(lr)
        super().__init__(as_groups(params), {"lr": lr, **self.rule.defaults(**hyper)})

    # ------------------------------------------------------------------ param groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a group ``{"modules": model_or_modules, **hyper-parameters}`` and hook its layers.

        Hyper-parameters missing from the group take the optimizer's defaults. A layer name that
        another group already uses gets the prefix ``group<i>.``.

        Args:
            param_group: ``{"modules": ..., "lr": ..., ...}``; ``"modules"`` is a model, a
                Conv2d/Linear, an iterable of them or a ``{name: module}`` dict.

        Raises:
            TypeError: no ``"modules"`` key, or a module that cannot be hooked.
            ValueError: invalid hyper-parameters, a key that is neither a hyper-parameter of the
                rule nor torch's (:class:`~hebbopt.rules.base.UnknownHyperParameterError`, the
                nearest valid name suggested), or a layer already hooked by this optimizer or by
                another one that is not closed.
        """
        if not isinstance(param_group, dict) or "modules" not in param_group:
            raise TypeError(
                f"{type(self).__name__} param groups are dicts with a 'modules' key "
                "(a model or Conv2d/Linear modules), e.g. {'modules': [model.conv1], 'lr': 1e-3}"
            )
        group = {k: v for k, v in param_group.items() if k != "modules"}
        if "params" in group:
            raise TypeError("give a param group 'modules', not 'params': the rules need the layers")
        self.rule.check_keys(group)
        named, skipped, head = named_layers(param_group["modules"], start=len(self._layers))
        for name, module in named.items():
            if module.weight in self._layers:
                raise ValueError(f"layer {name!r} is already hooked by this optimizer")
            checks.check_free(name, module)
        taken = set(self.layers) | set(self._skipped)
        prefix = ""
        if taken & (set(named) | set(skipped)):
            prefix = f"group{len(self.param_groups)}."
            named = {prefix + n: m for n, m in named.items()}
            skipped = {prefix + n: r for n, r in skipped.items()}
        full = {**self.defaults, **group}
        checks.learning_rate(full["lr"])
        self.rule.check(full, tuple(m.weight for m in named.values()))
        group["params"] = [m.weight for m in named.values()]
        group["layers"] = list(named)
        group["rule"] = self.rule.name
        group["rule_source"] = self.rule.source
        super().add_param_group(group)
        self._skipped.update(skipped)
        if head is not None:
            self._heads.append(head.replace("{prefix}", prefix))
        for name, module in named.items():
            self._group_index[module.weight] = len(self.param_groups) - 1
            layer = self._layers[module.weight] = HookedLayer(name, module, module.weight)
            self._init_rule_state(module.weight)
            layer.hook(self._capture)

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
        """A table of the hooked layers (name, type, weight shape, group), then why the rest are not.

        After the table: for each model given, its classifier (left out) and how it was found, or
        why none was (see :func:`hebbopt.selection.find_classifier`); then the layers the rules
        cannot hook (:attr:`skipped`).

        Returns:
            the table as text, one layer per line after a header.

        Examples:
            >>> import torch.nn as nn
            >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(288, 16), nn.Linear(16, 2))
            >>> print(HebbianOptimizer(net, "hpca").describe())
            layer  type    weight   group
            0      Conv2d  8×3×3×3  0
            2      Linear  16×288   0
            classifier: 3 (the last layer with parameters of Sequential), not hooked
        """
        groups = [[self._layers[p] for p in group["params"]] for group in self.param_groups]
        return report(groups, self._heads, self._skipped)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rule={self.rule.name!r},\n{self.describe()}\n)"

    def close(self) -> None:
        """Remove every forward hook; the model is plain again. Pending statistics are kept.

        The layers are then free for another Hebbian optimizer (an optimizer that is garbage
        collected frees them too).
        """
        for layer in self._layers.values():
            layer.unhook()
        self._closed = True
        self._spare.clear()
        self._before.clear()

    def __enter__(self) -> HebbianOptimizer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ capture
    def _statistics_kwargs(self, param: nn.Parameter, weight: torch.Tensor) -> dict[str, Any]:
        """The ``statistics`` keyword arguments of the weight's group, its values checked again
        only when they changed since they were last checked (edited by hand, or by a scheduler):
        a bad value fails at the forward pass, not deep in a kernel."""
        group = self.param_groups[self._group_index[param]]  # load_state_dict() replaces the dicts
        values = [group, *(group.get(k) for k in self.rule.hyper)]  # compared by identity: True == 1.0
        where = (len(group), tuple(weight.shape))
        checked = self._checked.get(param)
        if checked is None or checked[0] != where or not all(map(operator.is_, checked[1], values)):
            self.rule.check_keys(group)
            self.rule.check(group, (weight,))
            checked = self._checked[param] = (where, values, self.rule.kernel_kwargs(group)[0])
        return checked[2]

    def _init_rule_state(self, param: nn.Parameter) -> None:
        if self.rule.stateful and "rule_state" not in self.state[param]:
            self.state[param]["rule_state"] = self.rule.initial_state(param.detach())

    def _capture(self, layer: HookedLayer, x: torch.Tensor, output: torch.Tensor) -> None:
        """Add one forward call's statistics into ``state[weight]["stats"]`` (the hooks call this).

        The group's hyper-parameters are checked again where they changed since the last check (a
        value edited by hand fails here, not deep in a kernel); the weight shape is recorded, so that
        ``step()`` can refuse statistics of a layer that changed shape since. With ``diagnostics`` on
        and a rule with ``winners``, the neurons that win a sample are also marked in
        ``state[weight]["won"]``.
        """
        module, rule = layer.module, self.rule
        weight = module.weight.detach()
        stat_kwargs = self._statistics_kwargs(layer.param, weight)
        x, output, geometry = capture.layer_inputs(module, x, output)
        fn = capture.batch_statistics
        compiled = compiling.resolve(self.compile, x.device)
        if compiled:
            fn = compiling.compiled(fn)
        bias = module.bias.detach() if module.bias is not None else None
        state = self.state[layer.param]
        # The first forward after a step may overwrite the statistics that step applied. Never
        # under compile: inductor plans its own buffers, and a list argument would be a guard.
        spare = None
        if rule.takes_out and not compiled:
            spare = self._spare.pop(layer.param, []) if "stats" not in state else []
        rule_state = state.get("rule_state")
        given = weight
        cast = self.statistics_dtype is not None and self.statistics_dtype != weight.dtype
        if cast and not rule.reads_weight and not compiled:
            # only the shape and dtype reach the statistics: no cast of the weight on every step
            given = weight.new_empty((), dtype=self.statistics_dtype).expand(weight.shape)
        stats = fn(
            rule.statistics,
            x,
            output,
            bias,
            given,
            geometry,
            stat_kwargs,
            rule_state,
            spare,
            self.statistics_dtype,
        )
        # Keyed by the registered weight: if the module's weight was replaced, step() says so.
        if "stats" in state and state.get("shape") != tuple(weight.shape):
            raise ValueError(
                f"layer {layer.name!r} changed weight shape from {state['shape']} to "
                f"{tuple(weight.shape)} between forward passes; step() or create a new optimizer"
            )
        state["shape"] = tuple(weight.shape)
        state["stats"] = capture.accumulate(state.get("stats"), stats)
        if self.diagnostics and rule.winners is not None:
            # Eager even when the statistics are compiled: diagnostics only, and no extra graph.
            hyper = {k: stat_kwargs[k] for k in rule.winners_hyper}
            index = rule.winners(*capture.rule_inputs(x, output, bias, weight, geometry), geometry, **hyper)
            state["won"] = functional.mark_winners(state.get("won"), index, weight.shape[0])
        layer.captured = True

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
        hooked layers were in eval mode). The update is :func:`hebbopt.functional.hebbian_step`:
        every layer or none (a non-finite step restores every weight exactly, then raises). For a
        rule with state, the state its ``apply_`` returns (computed from the summed, all-reduced
        statistics, so the same on every process) replaces ``state[weight]["rule_state"]`` once the
        step is known to be finite.

        Args:
            closure: optional callable that runs forward passes (under ``torch.no_grad()``)
                before the update; its return value is returned.

        Returns:
            the closure's return value, or ``None``.

        Raises:
            ValueError: a group's ``lr`` or another hyper-parameter is invalid or unknown (e.g.
                edited by hand), a layer's weight was replaced or changed shape since the
                forward pass (statistics are kept), or the processes of a distributed run hold
                statistics of different layers or shapes.
            FloatingPointError: statistics are not finite (NaN/Inf activations), or the new
                weights ``W + lr·ΔW`` are not (e.g. an lr so large that they overflow); no weight
                changes and the statistics of this step are discarded.
        """
        result = None
        if closure is not None:
            result = closure()  # under no_grad: Hebbian forwards need no autograd graph
        pending = []
        for group in self.param_groups:
            self.rule.check_keys(group)
            checks.learning_rate(group["lr"])
            self.rule.check(group, tuple(group["params"]))
            for p in group["params"]:
                stats = self.state[p].get("stats")
                if stats is not None:
                    layer = self._layers[p]
                    checks.check_current(layer.name, layer.module, p, self.state[p].get("shape"))
                    pending.append((group, p, stats))
        if distributed.active():
            # Every rank reduces (even with nothing captured) so that no rank waits alone.
            layers = [(layer.name, self.state[p].get("stats")) for p, layer in self._layers.items()]
            distributed.all_reduce_statistics(layers, next(iter(self._layers)).device)
        self._warn_missing(bool(pending))
        if not pending:
            return result
        params = [p for _, p, _ in pending]
        copies = [self._before.get(p) for p in params]
        try:
            new_states, before = functional.hebbian_step(
                [p.detach() for p in params],
                [stats for _, _, stats in pending],
                [self.state[p].get("rule_state", {}) for p in params],
                [group["lr"] for group, _, _ in pending],
                [self.rule.kernel_kwargs(group)[1] for group, _, _ in pending],
                rule=self.rule,
                names=[self._layers[p].name for p in params],
                compile=self.compile,
                copies=copies,
                keep=self.diagnostics,  # the report compares with the weights as they were
            )
        except FloatingPointError:
            for p in params:  # the statistics of a step that cannot be applied are discarded
                del self.state[p]["stats"]
            raise
        finally:
            self._before.update({p: c for p, c in zip(params, copies, strict=True) if c is not None})
        for (_, p, stats), old, new_state in zip(pending, before, new_states, strict=True):
            state = self.state[p]
            if self.rule.stateful:
                state["rule_state"] = new_state
            if self.diagnostics:
                self.last_update[self._layers[p].name] = functional.update_report(
                    p.detach(), old, state.get("won")
                )
            del state["stats"]
            self._spare[p] = [v for k, v in stats.items() if k in self.rule.weight_shaped]
            state["step"] = state.get("step", 0) + 1
        return result

    def _warn_missing(self, captured_any: bool) -> None:
        layers = self._layers.values()
        never, idle = [], []
        if captured_any:
            never = [la.name for la in layers if not la.captured and "stats" not in self.state[la.param]]
        else:
            idle = [la.name for la in layers if not la.module.training]
        warning = checks.uncaptured_warning(captured_any, never, idle)
        if warning is not None and warning[0] not in self._warned:
            self._warned.add(warning[0])
            checks.warn(warning[1])

    # ------------------------------------------------------------------ state
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()``: hyper-parameters, step counts, pending statistics, winners, rule state.

        Everything but the step count keeps the dtype it was saved with (``torch.optim`` would
        cast every floating tensor to its weight's dtype, e.g. float32 sums of a bf16 model to
        bf16, booleans to floats) and moves to its weight's device. A rule state missing from the
        saved state (an older checkpoint) starts as the rule's ``init_state``.

        Args:
            state_dict: from ``state_dict()`` of an optimizer of the same rule and layers.

        Raises:
            ValueError: the state is of another rule or another set of layers (both named), or
                a group holds a key that is not a hyper-parameter of the rule.
        """
        self._spare.clear()
        checks.loadable(state_dict["param_groups"], self.rule, [list(g["layers"]) for g in self.param_groups])
        # torch casts what it does not know to the weight's dtype: keep every entry but the step
        # count aside and put it back as saved.
        kept = {
            i: {k: v for k, v in entry.items() if k != "step"} for i, entry in state_dict["state"].items()
        }
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for index, entries in kept.items():
            p = params[index]
            self.state[p].update({k: to_device(v, p.device) for k, v in entries.items()})
        for p in params:
            self._init_rule_state(p)
