"""What a Hebbian rule is: :class:`Rule`, its hyper-parameters (:class:`Hyper`) and their checks.

A rule is data plus pure functions. The hooks call ``statistics`` on every forward pass and add
the sums it returns; ``step()`` hands the summed (and, across processes, all-reduced) sums to
``apply_``. Because the statistics are sums, k forward passes before one step equal one batch k×
larger, and N processes equal one process with an N× batch, for every rule.

The contract (checked for every registered rule by ``tests/test_rules.py``):

* ``statistics(x, u, weight, geometry, *, <hyper>) -> {name: sum}``. ``x`` is the layer input,
  M×S for Linear (any leading dimensions already flattened) or B×C×H×W for Conv2d, already padded
  as ``geometry`` (:class:`~hebbopt.rules.geometry.Conv2dGeometry`, ``None`` for Linear) expects;
  ``u`` is the pre-activation ``w·x`` *without* bias, M×N or B×N×H'×W'; ``weight`` is the
  detached weight. All three share one dtype of at least float32. Every value returned is a sum
  over the samples (a tensor, or a Python int such as a count): sums add across batches and
  processes. The names in ``weight_shaped`` have the weight's shape.
* ``apply_(weight, stats, lr, *, <hyper>)`` updates ``weight`` in place to ``W + lr·ΔW``, where
  ``lr`` is a 0-d tensor (so that a compiled ``apply_`` does not recompile when a scheduler
  changes it). ``update(stats, weight, *, <hyper>) -> ΔW`` is the same step without ``lr`` and
  without the in-place fusion; a rule that gives only ``update`` gets ``W.add_(lr·ΔW)``.
* ``reference(layer, x, *, <hyper>) -> ΔW``: the paper's per-sample rule, literally, on unfolded
  patches (:func:`~hebbopt.rules.geometry.patches`), for an ``nn.Linear`` or ``nn.Conv2d`` and its
  input; the ground truth of the tests. It lives in the rule's own file, beside the fast form.
* ``winners(x, u, weight, geometry, *, <hyper>) -> index``, only for a competitive rule: the
  neuron that wins each sample (the argmax over neurons of what the rule ranks), shaped like
  ``u`` without its neuron dimension (M, or B×H'×W'). It takes the same inputs as ``statistics``
  and some of its hyper-parameters. With ``diagnostics=True`` the optimizer records which neurons
  ever win (``last_update[name]["ever_won"]``); ``None`` (the default) for a rule without winners.

A rule with state across steps (e.g. a sliding threshold θ) also gives ``init_state(weight) -> {name:
tensor}``, the state of a new layer, and then takes that state as one more positional argument,
the way ``torch.optim.sgd`` threads ``momentum_buffer_list`` through its functional kernel:

* ``statistics(x, u, weight, geometry, state, *, <hyper>)``: the state as it was before this step
  (it changes only in ``step()``, so sums over several forwards or processes still add);
* ``apply_(weight, stats, state, lr, *, <hyper>) -> new state`` (required): updates the weight in
  place and returns the new state, computed from the summed, all-reduced statistics, so every
  process keeps the same state;
* ``update(stats, weight, state, *, <hyper>) -> ΔW``;
* ``reference(layer, x, state, *, <hyper>) -> (ΔW, new state)``.

The optimizer owns the state (``optimizer.state[weight]["rule_state"]``): it saves and loads it
with ``state_dict()`` (dtype and device kept), passes it in and stores what comes back, also in
the compiled step. A stateless rule writes none of this.

``statistics`` may also take ``out=None``: a list of spare tensors (the statistics the last step
applied) that it hands to :func:`~hebbopt.rules.geometry.patch_sum`, which may write a Linear
layer's weight-shaped sum into one of them instead of a fresh tensor (on the CPU a fresh large
tensor costs more in page faults than the product); without ``out`` every sum is fresh.

The keyword-only parameters of ``statistics`` (but ``out``) and ``apply_``/``update`` are the rule's
hyper-parameters; their names are the param-group keys (``HebbianOptimizer(model, rule=...,
temperature=...)``, ``group["temperature"]``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Collection, Mapping
from typing import Any

import torch

GROUP_KEYS = frozenset(
    {
        "params",
        "lr",
        "layers",
        "rule",
        "rule_source",
        "param_names",
        "differentiable",
        "initial_lr",
        "max_lr",
        "min_lr",
        "swa_lr",
    }
)
"""Param-group keys that are not a rule's hyper-parameters: torch's (``params``, ``lr``,
``param_names``, ``differentiable``, and what its LR schedulers write: ``initial_lr``, ``max_lr``,
``min_lr``, ``swa_lr``) and the optimizer's own (``layers``, ``rule``, ``rule_source``). Any other key
is refused."""


class UnknownHyperParameterError(TypeError, ValueError):
    """A hyper-parameter or param-group key that the rule does not have (e.g. ``temprature``).

    A ``ValueError`` (a bad setting) and, as Python raises for an unexpected keyword argument, a
    ``TypeError``; the message names the nearest valid name.
    """


@dataclasses.dataclass(frozen=True)
class Check:
    """A check of one hyper-parameter value: a predicate, what it requires, and values it refuses.

    Args:
        accepts: ``accepts(value) -> bool``.
        requirement: what a valid value is, for the error message (e.g. ``"a finite number > 0"``).
        invalid: example values the check must refuse (the rule suite tries each of them).
    """

    accepts: Callable[[Any], bool]
    requirement: str
    invalid: tuple = ()


def real(value: Any) -> float | None:
    """``value`` as a float if it is a real number (Python, NumPy or 0-d tensor), else None.

    Args:
        value: anything a user may pass as a number.

    Returns:
        the float, or ``None`` for a bool, a string, a complex or boolean tensor, a tensor with
        more than one element, or anything else.

    Examples:
        >>> real(0.5), real(True), real("1")
        (0.5, None, None)
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_complex() or value.dtype == torch.bool:
            return None
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return None


def number(low: float, *, strict: bool) -> Check:
    """A finite real number ``> low`` (``strict``) or ``≥ low``.

    Args:
        low: the bound.
        strict: whether ``low`` itself is refused.

    Returns:
        the :class:`Check`.

    Examples:
        >>> number(0, strict=True).accepts(0.5), number(0, strict=True).accepts(0)
        (True, False)
    """

    def accepts(value: Any) -> bool:
        v = real(value)
        return v is not None and math.isfinite(v) and (v > low if strict else v >= low)

    below = low - 1 if strict else low - 0.5
    invalid = (below, math.nan, math.inf, "1", None, True) + ((low,) if strict else ())
    return Check(accepts, f"a finite number {'>' if strict else '≥'} {low:g}", invalid)


def integer(low: int) -> Check:
    """An integer ``≥ low`` (a Python or NumPy integer, not a bool or a float).

    Args:
        low: the smallest accepted value.

    Returns:
        the :class:`Check`.
    """

    def accepts(value: Any) -> bool:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= low

    return Check(accepts, f"an integer ≥ {low}", (low - 1, float(low), "2", None, True))


def one_of(*choices: str) -> Check:
    """One of the given strings.

    Args:
        *choices: the accepted values.

    Returns:
        the :class:`Check`.
    """
    return Check(lambda v: isinstance(v, str) and v in choices, f"one of {choices}", ("bogus", None, 1))


@dataclasses.dataclass(frozen=True)
class Hyper:
    """One hyper-parameter of a rule: its default, its check and a one-line description.

    Args:
        default: the value when neither the optimizer nor the group sets it.
        check: the :class:`Check` every value passes before it is used.
        doc: what it is, with the paper's symbol.
    """

    default: Any
    check: Check
    doc: str

    def convert(self, value: Any) -> Any:
        """The value as the kernels take it: ``float`` for real-valued, else unchanged.

        Args:
            value: a value that passed :attr:`check`.

        Returns:
            a Python float for a float-default hyper-parameter, the value itself otherwise.
        """
        if isinstance(self.default, float):
            return float(real(value))
        return int(value) if isinstance(self.default, int) and not isinstance(self.default, bool) else value


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (compiled-fn caches)
class Rule:
    """A Hebbian rule: name, hyper-parameters and pure functions (see the module docstring).

    Args:
        name: the registry key (``HebbianOptimizer(model, rule=name)``, ``pretrain.method``).
        summary: one line: what the rule is, with its paper.
        hyper: ``{name: Hyper}``; the names are keyword-only parameters of ``statistics`` and/or
            ``apply_``/``update``.
        statistics: ``(x, u, weight, geometry[, state], **hyper) -> {name: sum}``.
        update: ``(stats, weight[, state], **hyper) -> ΔW`` (without the learning rate).
        weight_shaped: the names of the statistics that have the weight's shape.
        reference: ``(layer, x, **hyper) -> ΔW``, the literal per-sample rule; with state,
            ``(layer, x, state, **hyper) -> (ΔW, new state)``; ``None`` for a rule without one
            (:func:`hebbopt.testing.check_rule` then skips exactness and runs its other checks).
        apply_: ``(weight, stats, lr, **hyper) -> None``, in place; default ``W += lr·update``.
            With state, ``(weight, stats, state, lr, **hyper) -> new state`` (required).
        check_layer: optional ``(hyper, weight) -> str | None``: a problem of these
            hyper-parameters with this layer (e.g. ``k`` larger than its number of neurons).
        examples: hyper-parameter settings the rule suite tests (``{}`` = the defaults).
        winners: for a competitive rule, ``(x, u, weight, geometry, **hyper) -> index``: the
            winning neuron of each sample (see the module docstring); ``None`` otherwise.
        init_state: for a rule with state across steps, ``(weight) -> {name: tensor}``, the
            state of a new layer (see the module docstring); ``None`` for a stateless rule.
        bound: optional, for a stateless rule: ``(absmax, stats, lr, **apply hyper) -> bound``,
            an upper bound on ``max|W_new|`` from ``absmax = max|W|`` (0-d float32 tensors),
            computed before ``apply_``; it must be NaN or Inf when any statistic is not finite
            (the step then checks them). Where it is below a quarter of the weight dtype's largest
            value (a margin far wider than the rounding of ``apply_``), the new weights are
            certain to be finite, so ``step()`` applies them without keeping a copy to restore
            from; a non-finite or larger bound falls back to the copy.
        reads_weight: whether ``statistics`` reads the weight's values; ``False`` where it takes
            only its shape and dtype (SoftHebb: ``Σ ỹ xᵀ`` and ``Σ ỹ u``), so that statistics in
            another dtype (``statistics_dtype``) skip casting the weight on every step (the
            rule suite checks it: the same statistics from a NaN weight of that shape).

    Raises:
        ValueError: a hyper-parameter that no function takes, a keyword-only parameter without a
            :class:`Hyper`, a ``winners`` parameter that ``statistics`` does not take, a default
            that fails its own check, or a rule with ``init_state`` but no ``apply_``.

    Examples:
        >>> from hebbopt.rules import RULES
        >>> sorted(RULES["swta"].defaults())
        ['similarity', 'temperature']
    """

    name: str
    summary: str
    hyper: Mapping[str, Hyper]
    statistics: Callable[..., dict]
    update: Callable[..., torch.Tensor]
    weight_shaped: frozenset[str]
    reference: Callable[..., torch.Tensor] | None = None
    apply_: Callable[..., None] | None = None
    check_layer: Callable[[dict, torch.Tensor], str | None] | None = None
    examples: tuple[dict, ...] = ({},)
    winners: Callable[..., torch.Tensor] | None = None
    init_state: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None = None
    bound: Callable[..., torch.Tensor] | None = None
    reads_weight: bool = True

    def __post_init__(self) -> None:
        if self.init_state is not None and self.apply_ is None:
            raise ValueError(f"rule {self.name!r}: a rule with init_state returns its new state from apply_")
        if self.init_state is not None and self.bound is not None:
            raise ValueError(
                f"rule {self.name!r}: bound is for a stateless rule (a new state is checked after "
                "apply_, so its weights must be kept to restore from)"
            )
        taken = set(self.statistics_hyper) | set(self.apply_hyper)
        if taken != set(self.hyper):
            raise ValueError(
                f"rule {self.name!r}: hyper-parameters {sorted(self.hyper)} must be exactly the "
                f"keyword-only parameters of statistics/apply_ ({sorted(taken)})"
            )
        extra = set(self.winners_hyper) - set(self.statistics_hyper)
        if extra:
            raise ValueError(
                f"rule {self.name!r}: winners takes {sorted(extra)}, which statistics does not; "
                "winners ranks what statistics sees, with some of its hyper-parameters"
            )
        for key, h in self.hyper.items():
            if not h.check.accepts(h.default):
                raise ValueError(f"rule {self.name!r}: default {key}={h.default!r} fails its check")

    def __deepcopy__(self, memo: dict) -> Rule:
        return self  # immutable; a copied optimizer keeps the rule's identity (and compiled kernels)

    def __reduce_ex__(self, protocol: Any) -> Any:
        # A registered rule unpickles as the registry's object, not as a lookalike.
        if _registered(self.name) is self:
            return _registered, (self.name,)
        return super().__reduce_ex__(protocol)

    @functools.cached_property
    def statistics_hyper(self) -> tuple[str, ...]:
        """The hyper-parameters ``statistics`` takes (its keyword-only parameters)."""
        return _keyword_only(self.statistics)

    @functools.cached_property
    def apply_hyper(self) -> tuple[str, ...]:
        """The hyper-parameters ``apply_`` (or ``update``) takes."""
        return _keyword_only(self.apply_ or self.update)

    @functools.cached_property
    def takes_out(self) -> bool:
        """Whether ``statistics`` takes ``out`` (spare buffers for weight-shaped results)."""
        return "out" in inspect.signature(self.statistics).parameters

    @functools.cached_property
    def winners_hyper(self) -> tuple[str, ...]:
        """The hyper-parameters ``winners`` takes (none without ``winners``)."""
        return _keyword_only(self.winners) if self.winners is not None else ()

    def defaults(self, **overrides: Any) -> dict[str, Any]:
        """Every hyper-parameter's default, with ``overrides`` applied and checked.

        Args:
            **overrides: values to use instead of the defaults.

        Returns:
            ``{name: value}`` for every hyper-parameter.

        Raises:
            UnknownHyperParameterError: an override that is not a hyper-parameter of this rule (a
                ``TypeError`` and a ``ValueError``).
            ValueError: an override that fails its check.
        """
        unknown = sorted(set(overrides) - set(self.hyper))
        if unknown:
            raise UnknownHyperParameterError(
                f"rule {self.name!r} has no hyper-parameter {unknown}{_nearest(unknown, self.hyper)}; "
                f"its hyper-parameters are {sorted(self.hyper)}"
            )
        values = {k: overrides.get(k, h.default) for k, h in self.hyper.items()}
        self.check(values)
        return values

    def check(self, values: Mapping[str, Any], weights: tuple[torch.Tensor, ...] = ()) -> None:
        """Raise ``ValueError`` naming the first invalid hyper-parameter.

        Args:
            values: ``{name: value}`` for every hyper-parameter (e.g. a param group).
            weights: the weights of the layers these values apply to (for :attr:`check_layer`).

        Raises:
            ValueError: a missing or invalid value, with what a valid one is.
        """
        for key, h in self.hyper.items():
            if key not in values:
                raise ValueError(f"{self.name}: missing hyper-parameter {key!r}")
            if not h.check.accepts(values[key]):
                raise ValueError(
                    f"invalid {key} for rule {self.name!r}: {values[key]!r} (must be {h.check.requirement})"
                )
        if self.check_layer is not None:
            for w in weights:
                problem = self.check_layer(dict(values), w)
                if problem:
                    raise ValueError(f"{self.name}: {problem} (layer weight {tuple(w.shape)})")

    @property
    def source(self) -> str:
        """Where the rule's functions live (``module.qualname`` of ``statistics``): with the name,
        what an optimizer's state records of its rule, so that another rule of the same name (a
        user's) refuses it.

        Returns:
            ``"<module>.<qualname>"``.
        """
        return f"{self.statistics.__module__}.{self.statistics.__qualname__}"

    def check_keys(self, group: Collection[str], others: Collection[str] = GROUP_KEYS) -> None:
        """Refuse a param-group key that is neither a hyper-parameter of this rule nor in ``others``.

        A misspelt key (``temprature``) would otherwise be kept and silently ignored.

        Args:
            group: the keys of a param group (or the group itself).
            others: the keys allowed besides the hyper-parameters (default :data:`GROUP_KEYS`).

        Raises:
            UnknownHyperParameterError: naming the unknown keys and the nearest valid name.
        """
        unknown = sorted(k for k in group if k not in self.hyper and k not in others)
        if unknown:
            valid = ["lr", *self.hyper]
            raise UnknownHyperParameterError(
                f"param group keys {unknown} are not hyper-parameters of rule {self.name!r}"
                f"{_nearest(unknown, valid)} (valid: {', '.join(valid)})"
            )

    def kernel_kwargs(self, values: Mapping[str, Any]) -> tuple[dict, dict]:
        """``(statistics kwargs, apply_ kwargs)`` from checked values, converted for the kernels.

        Args:
            values: checked hyper-parameter values (a param group).

        Returns:
            the keyword arguments of ``statistics`` and of ``apply_``.
        """
        conv = {k: self.hyper[k].convert(values[k]) for k in self.hyper}
        return {k: conv[k] for k in self.statistics_hyper}, {k: conv[k] for k in self.apply_hyper}

    @property
    def stateful(self) -> bool:
        """Whether the rule keeps state across steps (it has ``init_state``)."""
        return self.init_state is not None

    def initial_state(self, weight: torch.Tensor) -> dict[str, torch.Tensor]:
        """The state of a new layer with this weight: ``init_state(weight)``, ``{}`` if stateless.

        Args:
            weight: the layer's (detached) weight.

        Returns:
            ``{name: tensor}``.
        """
        return {} if self.init_state is None else dict(self.init_state(weight))

    def apply(self, weight: torch.Tensor, stats: dict, state: dict, lr: torch.Tensor, **hyper: Any) -> dict:
        """``W ← W + lr·ΔW`` in place (the rule's ``apply_``, or ``W.add_(lr·update)``); the new state.

        Args:
            weight: the weight, updated in place.
            stats: the summed statistics.
            state: the layer's state before this step (``{}`` for a stateless rule).
            lr: the learning rate as a 0-d tensor.
            **hyper: the ``apply_`` keyword arguments.

        Returns:
            the state after this step (``state`` itself for a stateless rule).
        """
        if self.init_state is not None:
            return self.apply_(weight, stats, state, lr, **hyper)
        if self.apply_ is not None:
            self.apply_(weight, stats, lr, **hyper)
        else:
            weight.add_(self.update(stats, weight, **hyper) * lr)
        return state

    def reference_step(
        self, layer: Any, x: torch.Tensor, state: dict, **hyper: Any
    ) -> tuple[torch.Tensor, dict]:
        """The literal per-sample rule as ``(ΔW, new state)`` for any rule, stateful or not.

        Args:
            layer: an ``nn.Linear`` or ``nn.Conv2d``.
            x: its input.
            state: the layer's state before the step (``{}`` for a stateless rule).
            **hyper: every hyper-parameter of the rule.

        Returns:
            ``(ΔW without η, state after the step)``.

        Raises:
            ValueError: the rule has no ``reference``.
        """
        if self.reference is None:
            raise ValueError(f"rule {self.name!r} has no reference (its per-sample form)")
        if self.init_state is None:
            return self.reference(layer, x, **hyper), state
        return self.reference(layer, x, state, **hyper)


def _registered(name: str) -> Rule | None:
    from hebbopt.rules import RULES  # hebbopt.rules imports this module

    return RULES.get(name)


def _nearest(unknown: list[str], valid: Collection[str]) -> str:
    guesses = {k: m[0] for k in unknown if (m := difflib.get_close_matches(k, list(valid), n=1))}
    if len(unknown) == 1 and guesses:
        return f" (did you mean {guesses[unknown[0]]!r}?)"
    return f" (did you mean {', '.join(f'{v!r} for {k!r}' for k, v in guesses.items())}?)" if guesses else ""


def _keyword_only(fn: Callable) -> tuple[str, ...]:
    params = inspect.signature(fn).parameters.values()
    return tuple(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "out")
