"""Hebbian rules as pure functions, and :data:`RULES`, the registry every other layer iterates.

To add a rule, write ``rules/<name>.py`` with a :class:`~hebbopt.rules.base.Rule` named ``RULE``
and add it to the tuple below (docs/adding-a-rule.md walks through Oja's rule).
"""

from hebbopt.rules import hpca, krotov, oja, softhebb, swta
from hebbopt.rules.base import Check, Hyper, Rule
from hebbopt.rules.geometry import Conv2dGeometry

RULES: dict[str, Rule] = {r.name: r for r in (swta.RULE, hpca.RULE, softhebb.RULE, krotov.RULE, oja.RULE)}
"""Every registered rule by name: ``HebbianOptimizer(model, rule=name)``, ``pretrain.method``."""


def get_rule(rule: "str | Rule") -> Rule:
    """The registered rule of this name (or the :class:`Rule` itself).

    Args:
        rule: a name in :data:`RULES`, or a :class:`Rule` object (e.g. a user's own).

    Returns:
        the rule.

    Raises:
        ValueError: an unknown name (the message lists the registered ones).
        TypeError: neither a string nor a :class:`Rule`.
    """
    if isinstance(rule, Rule):
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a name in hebbopt.rules.RULES or a Rule, got {type(rule).__name__}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}: choose one of {sorted(RULES)}")
    return RULES[rule]


__all__ = [
    "RULES",
    "Check",
    "Conv2dGeometry",
    "Hyper",
    "Rule",
    "get_rule",
    "hpca",
    "krotov",
    "oja",
    "softhebb",
    "swta",
]
