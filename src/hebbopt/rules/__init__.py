"""Hebbian rules as pure functions, and :data:`RULES`, the registry every other layer iterates.

To add a rule, write ``rules/<name>.py`` with a :class:`~hebbopt.rules.base.Rule` named ``RULE``,
import the module below and add it to the tuple (docs/adding-a-rule.md walks through Oja's rule).
"""

# Rule and Hyper are bound before the rule modules run, so that a rule file may import them from
# here (``from hebbopt.rules import Rule``) without a circular import.
from hebbopt.rules.base import Check, Hyper, Rule
from hebbopt.rules.geometry import Conv2dGeometry

# isort: split
from hebbopt.rules import bcm, hpca, krotov, oja, softhebb, swta

RULES: dict[str, Rule] = {m.RULE.name: m.RULE for m in (swta, hpca, softhebb, krotov, oja, bcm)}
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
    "bcm",
    "get_rule",
    "hpca",
    "krotov",
    "oja",
    "softhebb",
    "swta",
]
