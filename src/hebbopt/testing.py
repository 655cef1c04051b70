"""The library's conformance checks, for any :class:`~hebbopt.rules.Rule` (a shipped one or yours).

:func:`check_rule` runs them all; the library's own rule suite (``tests/test_rules.py``) calls the
same functions for every registered rule. Each check builds fresh random float64 networks and
inputs, trains them through :class:`~hebbopt.HebbianOptimizer`, and raises
:class:`ConformanceError` (an ``AssertionError``) naming the rule, the check and the layer at the
first difference:

- :func:`check_exact`: consecutive steps equal the rule's literal per-sample ``reference`` (to
  1e-10), state included, on Conv2d layers of five geometries (stride, dilation, reflect /
  circular / replicate / 'same' padding, non-square kernels) and Linear layers;
- :func:`check_accumulation`: statistics accumulated over k forwards, then one step, equal one
  forward of the whole batch;
- :func:`check_round_trip`: a ``state_dict`` saved mid-training (pending statistics included)
  resumes bit for bit;
- :func:`check_non_finite`: a step on non-finite statistics raises ``FloatingPointError`` and
  leaves every weight and state as it was;
- :func:`check_compile`: ``compile=True`` gives the eager weights and state (to 1e-12);
- :func:`check_reads_weight`: a rule declaring ``reads_weight=False`` gives the same statistics
  from a NaN weight of the same shape.

A rule without ``reference`` skips :func:`check_exact` (nothing to be exact against); the sum across
processes is checked for the registered rules by the library's own multi-process test.

Examples:
    >>> from hebbopt.rules import RULES
    >>> check_rule(RULES["oja"], compile=False)
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from hebbopt import capture
from hebbopt.optimizer import HebbianOptimizer
from hebbopt.rules import Rule, get_rule


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    diff, norm = (a.double() - b.double()).norm().item(), b.double().norm().item()
    if norm == 0:
        return 0.0 if diff == 0 else float("inf")
    return diff / norm


def geometry_net(generator: torch.Generator) -> nn.Sequential:
    """Conv2d layers of five geometries and Linear layers, with biases and a BatchNorm, float64.

    Args:
        generator: seeds the weights.

    Returns:
        the network (7 layers a Hebbian optimizer hooks; the last Linear is the classifier), for
        ``3×13×11`` inputs.
    """
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
        net = nn.Sequential(
            nn.Conv2d(3, 6, (3, 2), stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(6, 5, 3, padding=2, dilation=2, padding_mode="reflect"), nn.BatchNorm2d(5),
            nn.Conv2d(5, 7, (2, 3), stride=(1, 2), padding=(1, 0), padding_mode="circular"), nn.ReLU(),
            nn.Conv2d(7, 4, (4, 3), padding="same"),
            nn.Conv2d(4, 6, 1, stride=2, padding_mode="replicate", padding=1),
            nn.Flatten(), nn.LazyLinear(40), nn.ReLU(), nn.Linear(40, 9), nn.ReLU(), nn.Linear(9, 3),
        ).double()  # fmt: skip
        net(torch.randn(2, 3, 13, 11, dtype=torch.float64))  # sizes the lazy Linear
    return net


def small_net(generator: torch.Generator) -> nn.Sequential:
    """Two Conv2d layers and a hidden Linear (hooked), and a classifier, float64, for ``3×10×10``.

    Args:
        generator: seeds the weights.

    Returns:
        the network.
    """
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**31, (), generator=generator)))
        return nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3), nn.ReLU(),
            nn.Flatten(), nn.Linear(8 * 3 * 3, 20), nn.ReLU(), nn.Linear(20, 4),
        ).double()  # fmt: skip


def record_inputs(
    model: nn.Module, layers: dict[str, nn.Module], *batches: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Run ``model`` on each batch (no grad) and return every layer's inputs, concatenated.

    The layers are in eval mode meanwhile, so that Hebbian hooks add no statistics.

    Args:
        model: the network.
        layers: ``{name: module}`` whose inputs to record.
        *batches: the inputs of ``model``.

    Returns:
        ``{name: the layer's inputs over every batch, concatenated on the first dimension}``.
    """
    seen: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    handles = [
        m.register_forward_hook(lambda mod, args, out, name=name: seen[name].append(args[0].detach().clone()))
        for name, m in layers.items()
    ]
    modes = {name: m.training for name, m in layers.items()}
    try:
        for m in layers.values():
            m.eval()
        with torch.no_grad():
            for x in batches:
                model(x)
    finally:
        for h in handles:
            h.remove()
        for name, m in layers.items():
            m.train(modes[name])
    return {name: torch.cat(xs) for name, xs in seen.items()}


def _flat(state: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[prefix + str(key)] = value
    return out


class ConformanceError(AssertionError):
    """A rule failed a conformance check: the message names the rule, the check and what differed.

    Args:
        rule: the rule.
        check: the check's name.
        what: what differed, and where.
    """

    def __init__(self, rule: Rule, check: str, what: str) -> None:
        super().__init__(f"rule {rule.name!r}, {check}: {what}")


def _close_states(rule: Rule, check: str, got: dict, expected: dict, tol: float, where: str) -> None:
    if got.keys() != expected.keys():
        raise ConformanceError(rule, check, f"{where}: state keys {sorted(got)} != {sorted(expected)}")
    for key, value in expected.items():
        if got[key].dtype != value.dtype or _rel_err(got[key], value) > tol:
            raise ConformanceError(
                rule,
                check,
                f"{where}: state {key!r} differs (relative error {_rel_err(got[key], value):.1e})",
            )


def _same_state(rule: Rule, check: str, a: HebbianOptimizer, b: HebbianOptimizer) -> None:
    sa, sb = _flat(a.state_dict()["state"]), _flat(b.state_dict()["state"])
    if sa.keys() != sb.keys():
        raise ConformanceError(rule, check, f"optimizer state keys differ: {sorted(set(sa) ^ set(sb))}")
    for key, va in sa.items():
        vb = sb[key]
        same = (
            isinstance(vb, torch.Tensor) and va.dtype == vb.dtype and torch.equal(va, vb)
            if isinstance(va, torch.Tensor)
            else va == vb
        )
        if not same:
            raise ConformanceError(rule, check, f"optimizer state {key!r} differs")


def check_exact(
    rule: Rule | str,
    hyper: dict[str, Any] | None = None,
    *,
    steps: int = 3,
    seed: int = 0,
    tol: float = 1e-10,
) -> None:
    """Consecutive steps equal the rule's per-sample reference, state included (float64).

    The reference carries its own state, from a new layer's, step to step, apart from the
    optimizer's; every layer must move.

    Args:
        rule: the rule (or a registered name).
        hyper: hyper-parameters (the rest take their defaults).
        steps: consecutive steps, each on a fresh random batch.
        seed: seeds the network and the batches.
        tol: the largest relative error ‖ΔW − ΔW_ref‖ / ‖ΔW_ref‖ allowed.

    Raises:
        ConformanceError: a layer's update or state differs from the reference's, or does not move.
        ValueError: the rule has no ``reference``.
    """
    rule = get_rule(rule)
    if rule.reference is None:
        raise ValueError(f"rule {rule.name!r} has no reference to be exact against")
    hyper = dict(hyper or {})
    full = rule.defaults(**hyper)
    g = torch.Generator().manual_seed(seed)
    net = geometry_net(g)
    opt = HebbianOptimizer(net, rule, lr=1.0, compile=False, **hyper)
    states = {n: rule.initial_state(m.weight.detach()) for n, m in opt.layers.items()}
    for step in range(steps):
        x = torch.randn(3, 3, 13, 11, dtype=torch.float64, generator=g)
        inputs = record_inputs(net, opt.layers, x)
        expected = {}
        for n, m in opt.layers.items():
            expected[n], states[n] = rule.reference_step(m, inputs[n], states[n], **full)
        before = {n: m.weight.detach().clone() for n, m in opt.layers.items()}
        with torch.no_grad():
            net(x)
        opt.step()
        for n, m in opt.layers.items():
            where = f"step {step + 1}, layer {n}"
            if step == 0 and expected[n].abs().max() == 0:
                raise ConformanceError(rule, "exact", f"{where}: the reference does not move the layer")
            err = _rel_err(m.weight.detach() - before[n], expected[n])
            if err > tol:
                raise ConformanceError(
                    rule, "exact", f"{where}: relative error {err:.1e} against the reference (> {tol})"
                )
            _close_states(rule, "exact", opt.state[m.weight].get("rule_state", {}), states[n], tol, where)
    opt.close()


def check_accumulation(
    rule: Rule | str,
    hyper: dict[str, Any] | None = None,
    *,
    parts: int = 3,
    seed: int = 0,
    tol: float = 1e-12,
) -> None:
    """k forwards, then one step, equal one forward of the whole batch, then one step (two steps).

    Args:
        rule: the rule (or a registered name).
        hyper: hyper-parameters (the rest take their defaults).
        parts: the micro-batches each batch is split into.
        seed: seeds the network and the batches.
        tol: the largest relative error between the two networks' parameters.

    Raises:
        ConformanceError: the parameters or states differ, or a hooked layer did not move.
    """
    rule = get_rule(rule)
    g = torch.Generator().manual_seed(seed)
    a = small_net(g)
    b = copy.deepcopy(a)
    opt_a, opt_b = (HebbianOptimizer(m, rule, lr=0.5, compile=False, **(hyper or {})) for m in (a, b))
    init = {name: p.detach().clone() for name, p in a.named_parameters()}
    for _ in range(2):
        x = torch.randn(9, 3, 10, 10, dtype=torch.float64, generator=g)
        with torch.no_grad():
            a(x)
            for chunk in x.chunk(parts):
                b(chunk)
        opt_a.step()
        opt_b.step()
    hooked = {f"{n}.weight" for n in opt_a.layers}
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if _rel_err(pb, pa) > tol:
            raise ConformanceError(
                rule, "accumulation", f"{name}: {parts} micro-batches differ from one batch"
            )
        if (name in hooked) == torch.equal(pa, init[name]):
            raise ConformanceError(
                rule, "accumulation", f"{name}: {'did not move' if name in hooked else 'moved'}"
            )
    for (n, ma), mb in zip(opt_a.layers.items(), opt_b.layers.values(), strict=True):
        _close_states(
            rule, "accumulation", opt_b.state[mb.weight].get("rule_state", {}),
            opt_a.state[ma.weight].get("rule_state", {}), tol, f"layer {n}",
        )  # fmt: skip
    opt_a.close()
    opt_b.close()


def check_round_trip(rule: Rule | str, hyper: dict[str, Any] | None = None, *, seed: int = 0) -> None:
    """A ``state_dict`` saved mid-training (pending statistics included) resumes bit for bit.

    Args:
        rule: the rule (or a registered name).
        hyper: hyper-parameters (the rest take their defaults).
        seed: seeds the network and the batches.

    Raises:
        ConformanceError: the loaded state, or the weights and state after two more steps, differ.
    """
    rule = get_rule(rule)
    g = torch.Generator().manual_seed(seed)
    a = small_net(g)
    opt_a = HebbianOptimizer(a, rule, lr=0.2, compile=False, **(hyper or {}))
    batches = [torch.randn(4, 3, 10, 10, dtype=torch.float64, generator=g) for _ in range(6)]
    for x in batches[:3]:  # training under way: step counts and any rule state have moved
        with torch.no_grad():
            a(x)
        opt_a.step()
    with torch.no_grad():
        a(batches[3])  # pending statistics are part of the state
    b = copy.deepcopy(a)
    opt_b = HebbianOptimizer(b, rule, lr=0.9, compile=False, **(hyper or {}))
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))
    if opt_b.param_groups[0]["lr"] != 0.2:
        raise ConformanceError(rule, "round trip", "the loaded learning rate is not the saved one")
    _same_state(rule, "round trip (loaded)", opt_a, opt_b)
    for x in batches[4:]:
        for m, opt in ((a, opt_a), (b, opt_b)):
            with torch.no_grad():
                m(x)
            opt.step()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if not torch.equal(pa, pb):
            raise ConformanceError(rule, "round trip", f"{name} differs after resuming")
    _same_state(rule, "round trip (resumed)", opt_a, opt_b)
    opt_a.close()
    opt_b.close()


def check_non_finite(rule: Rule | str, hyper: dict[str, Any] | None = None, *, seed: int = 0) -> None:
    """A step on a batch holding NaN raises ``FloatingPointError`` and changes nothing.

    Args:
        rule: the rule (or a registered name).
        hyper: hyper-parameters (the rest take their defaults).
        seed: seeds the network and the batches.

    Raises:
        ConformanceError: the step did not raise, or a weight or a state entry changed.
    """
    rule = get_rule(rule)
    g = torch.Generator().manual_seed(seed)
    net = small_net(g)
    opt = HebbianOptimizer(net, rule, lr=0.2, compile=False, **(hyper or {}))
    with torch.no_grad():
        net(torch.randn(4, 3, 10, 10, dtype=torch.float64, generator=g))
    opt.step()  # any rule state has moved from its start
    weights = copy.deepcopy(net.state_dict())
    state = _flat(copy.deepcopy(opt.state_dict()["state"]))
    x = torch.randn(4, 3, 10, 10, dtype=torch.float64, generator=g)
    x[0, 0, 0, 0] = torch.nan
    with torch.no_grad():
        net(x)
    try:
        opt.step()
    except FloatingPointError:
        pass
    else:
        raise ConformanceError(
            rule, "non-finite", "a step on NaN statistics did not raise FloatingPointError"
        )
    for k, v in net.state_dict().items():
        if not torch.equal(v, weights[k]):
            raise ConformanceError(rule, "non-finite", f"{k} changed")
    after = _flat(opt.state_dict()["state"])
    for k, v in state.items():
        if not (torch.equal(after[k], v) if isinstance(v, torch.Tensor) else after[k] == v):
            raise ConformanceError(rule, "non-finite", f"optimizer state {k!r} changed")
    opt.close()


def check_reads_weight(rule: Rule | str, hyper: dict[str, Any] | None = None, *, seed: int = 0) -> None:
    """For a rule with ``reads_weight=False``: every layer's statistics are the same from a weight
    of NaN (same shape and dtype) as from its own weight; nothing to check otherwise.

    Args:
        rule: the rule (or a registered name).
        hyper: hyper-parameters (the rest take their defaults).
        seed: seeds the network and the batch.

    Raises:
        ConformanceError: a statistic differs (the rule does read the weight's values).
    """
    rule = get_rule(rule)
    if rule.reads_weight:
        return
    g = torch.Generator().manual_seed(seed)
    net = geometry_net(g)
    x = torch.randn(3, 3, 13, 11, dtype=torch.float64, generator=g)
    full = rule.defaults(**(hyper or {}))
    kwargs = {k: full[k] for k in rule.statistics_hyper}
    layers = {n: m for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for name, inputs in record_inputs(net, layers, x).items():
        module = layers[name]
        weight = module.weight.detach()
        with torch.no_grad():
            seen, output, geometry = capture.layer_inputs(module, inputs, module(inputs))
        state = rule.initial_state(weight) if rule.stateful else None
        bias = None if module.bias is None else module.bias.detach()
        own, nan = (
            capture.batch_statistics(rule.statistics, seen, output, bias, w, geometry, kwargs, state)
            for w in (weight, torch.full_like(weight, torch.nan))
        )
        for key, value in own.items():
            same = torch.equal(value, nan[key]) if isinstance(value, torch.Tensor) else value == nan[key]
            if not same:
                raise ConformanceError(
                    rule, "reads-weight", f"layer {name}: {key!r} changed with the weight's values"
                )


def check_compile(
    rule: Rule | str, hyper: dict[str, Any] | None = None, *, seed: int = 0, tol: float = 1e-12
) -> None:
    """``compile=True`` gives the eager weights and state over four steps with a changing lr.

    Args:
        rule: the rule (or a registered name).
        hyper: hyper-parameters (the rest take their defaults).
        seed: seeds the layer and the batches.
        tol: the largest relative error between compiled and eager.

    Raises:
        ConformanceError: the weights or the state differ.
    """
    rule = get_rule(rule)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(int(torch.randint(2**31, (), generator=g)))
        conv = nn.Conv2d(3, 5, 3, stride=2, padding=1).double()
    twin = copy.deepcopy(conv)
    compiled = HebbianOptimizer([conv], rule, lr=0.3, compile=True, **(hyper or {}))
    eager = HebbianOptimizer([twin], rule, lr=0.3, compile=False, **(hyper or {}))
    for step in range(4):
        x = torch.randn(2, 3, 9, 9, dtype=torch.float64, generator=g)
        conv(x)
        twin(x)
        compiled.step()
        eager.step()
        compiled.param_groups[0]["lr"] = eager.param_groups[0]["lr"] = 0.3 / (step + 2)  # a scheduler
    if _rel_err(conv.weight, twin.weight) > tol:
        raise ConformanceError(rule, "compile", "compiled weights differ from eager ones")
    _close_states(
        rule, "compile", compiled.state[conv.weight].get("rule_state", {}),
        eager.state[twin.weight].get("rule_state", {}), tol, "the layer",
    )  # fmt: skip
    compiled.close()
    eager.close()


def check_rule(
    rule: Rule | str, *, examples: list[dict[str, Any]] | None = None, compile: bool = True
) -> None:
    """Every conformance check (module docstring) on each hyper-parameter setting.

    Args:
        rule: the rule (or a registered name).
        examples: the settings to check (default: the rule's own ``examples``).
        compile: also :func:`check_compile` (about 15 s per new graph on a 2-core CPU).

    Raises:
        ConformanceError: the first check that fails, naming the rule, the check and the layer.
    """
    rule = get_rule(rule)
    for hyper in examples if examples is not None else rule.examples:
        if rule.reference is not None:
            check_exact(rule, hyper)
        check_accumulation(rule, hyper)
        check_round_trip(rule, hyper)
        check_non_finite(rule, hyper)
        check_reads_weight(rule, hyper)
        if compile:
            check_compile(rule, hyper)


__all__ = [
    "ConformanceError",
    "check_accumulation",
    "check_compile",
    "check_exact",
    "check_non_finite",
    "check_reads_weight",
    "check_round_trip",
    "check_rule",
    "geometry_net",
    "record_inputs",
    "small_net",
]
