"""Hebbian rules as pure functions, and :data:`RULES`, the registry every other layer iterates.

A rule contributed to hebbopt is one file, ``rules/<name>.py`` with a
:class:`~hebbopt.rules.base.Rule` named ``RULE``, and one line, ``"<name>"`` in
:data:`RULE_MODULES`. A rule of your own package needs no edit of hebbopt: :func:`register` it, or
declare it under the entry-point group ``hebbopt.rules`` (:data:`ENTRY_POINT_GROUP`) and every
``import hebbopt`` registers it, so that ``--pretrain.method <name>`` and the tables see it.
docs/adding-a-rule.md walks through both, with Oja's rule and a rule with state.
"""

import importlib
import importlib.metadata
import warnings

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


RESERVED = ("vae", "none")
"""Pre-training method names that are not rules (the β-VAE baseline, the random start)."""

ENTRY_POINT_GROUP = "hebbopt.rules"
"""The entry-point group whose objects (each a :class:`Rule`, the entry's name its ``name``) are
registered at ``import hebbopt``. In a package's ``pyproject.toml``::

    [project.entry-points."hebbopt.rules"]
    my_oja = "my_package.my_oja:RULE"
"""


def register(rule: Rule) -> Rule:
    """Add a rule of your own to :data:`RULES`: ``HebbianOptimizer(model, rule=name)``,
    ``pretrain.method``, ``sweep.methods`` and ``pretrain.rule_kwargs`` then take its name.

    Registering the same object again does nothing.

    Args:
        rule: the rule.

    Returns:
        the rule.

    Raises:
        TypeError: ``rule`` is not a :class:`Rule`.
        ValueError: its name is another rule's, a reserved method name (``vae``, ``none``), or not a
            word of letters, digits and underscores.
    """
    if not isinstance(rule, Rule):
        raise TypeError(f"register takes a hebbopt.rules.Rule, got {type(rule).__name__}")
    if not rule.name.isidentifier():
        raise ValueError(f"a rule's name is a word of letters, digits and underscores, got {rule.name!r}")
    if rule.name in RESERVED:
        raise ValueError(
            f"rule name {rule.name!r} is a pre-training method that is not a rule; choose another"
        )
    taken = RULES.get(rule.name)
    if taken is rule:
        return rule
    if taken is not None:
        raise ValueError(f"rule name {rule.name!r} is taken by {taken.source}; give your rule another name")
    RULES[rule.name] = rule
    return rule


def _register_entry_points() -> None:
    """Register every rule of the installed packages' ``hebbopt.rules`` entry points; one that does not
    load (or is not a valid rule named as its entry) is skipped with a warning naming it."""
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        where = f"entry point {entry.name} = {entry.value} (group {ENTRY_POINT_GROUP})"
        try:
            rule = entry.load()
            if isinstance(rule, Rule) and rule.name != entry.name:
                raise ValueError(f"the rule is named {rule.name!r}: name the entry point after it")
            register(rule)
        except Exception as e:  # a broken plugin must not break ``import hebbopt``
            warnings.warn(f"{where}: not registered: {e}", RuntimeWarning, stacklevel=2)


_register_entry_points()


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


__all__ = [
    "ENTRY_POINT_GROUP",
    "RESERVED",
    "RULES",
    "RULE_MODULES",
    "Check",
    "Conv2dGeometry",
    "Hyper",
    "Rule",
    "get_rule",
    "register",
]
