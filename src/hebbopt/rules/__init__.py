"""Hebbian rules as pure functions, and :data:`RULES`, the registry every other layer iterates.

To add a rule, write ``rules/<name>.py`` with a :class:`~hebbopt.rules.base.Rule` named ``RULE``
and add ``"<name>"`` to :data:`RULE_MODULES`: one file and one line (docs/adding-a-rule.md walks
through Oja's rule, and a rule with state).
"""

import importlib

# Rule and Hyper are bound before the rule modules run, so that a rule file may import them from
# here (``from hebbopt.rules import Rule``) without a circular import.
from hebbopt.rules.base import Check, Hyper, Rule
from hebbopt.rules.geometry import Conv2dGeometry

RULE_MODULES = ("swta", "hpca", "softhebb", "krotov", "oja", "bcm")
"""The modules of ``hebbopt/rules/`` that define a ``RULE``, in registry order."""

RULES: dict[str, Rule] = {
    rule.name: rule for rule in (importlib.import_module(f"{__name__}.{m}").RULE for m in RULE_MODULES)
}
"""Every registered rule by name: ``HebbianOptimizer(model, rule=name)``, ``pretrain.method``. Each
module is imported here, so ``hebbopt.rules.<module>`` is there after ``import hebbopt.rules``."""


def get_rule(rule: "str | Rule") -> Rule:
    """The registered rule of this name (or the :class:`Rule` itself).

    Args:
        rule: a name in :data:`RULES`, or a :class:`Rule` object (e.g. a user's own).

    Returns:
        the rule.

    Raises:
        ValueError: an unknown name (the message lists the registered ones), or a :class:`Rule`
            whose name is a registered rule's but which is not that rule.
        TypeError: neither a string nor a :class:`Rule`.
    """
    if isinstance(rule, Rule):
        taken = RULES.get(rule.name)
        if taken is not None and taken is not rule:
            raise ValueError(
                f"rule name {rule.name!r} is taken by the registered rule ({taken.source}); give your "
                "rule another name"
            )
        return rule
    if not isinstance(rule, str):
        raise TypeError(f"rule must be a name in hebbopt.rules.RULES or a Rule, got {type(rule).__name__}")
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}: choose one of {sorted(RULES)}")
    return RULES[rule]


__all__ = ["RULES", "RULE_MODULES", "Check", "Conv2dGeometry", "Hyper", "Rule", "get_rule"]
