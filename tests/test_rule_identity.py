"""Rule names are unique: a user's rule cannot take a registered rule's name, and an optimizer's state
carries its rule's identity, so that another rule of the same name refuses it."""

import dataclasses
import inspect

import pytest
import torch
from torch import nn

import hebbopt
from hebbopt.rules import RULES


def oja_sums(*args, **kwargs):  # a user's rule: Oja's sums, from a function of its own
    return RULES["oja"].statistics(*args, **kwargs)


def hpca_sums(*args, **kwargs):  # another user's rule
    return RULES["hpca"].statistics(*args, **kwargs)


oja_sums.__signature__ = inspect.signature(RULES["oja"].statistics)
hpca_sums.__signature__ = inspect.signature(RULES["hpca"].statistics)


def _renamed(rule, name):
    return dataclasses.replace(rule, name=name, statistics=oja_sums if rule is RULES["oja"] else hpca_sums)


def test_a_users_rule_cannot_take_a_registered_name():
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"rule name 'oja' is taken by the registered rule"):
        hebbopt.HebbianOptimizer(model, _renamed(RULES["oja"], "oja"))
    opt = hebbopt.HebbianOptimizer(model, RULES["oja"])  # the registered rule itself is fine
    opt.close()


def test_a_state_of_another_rule_of_the_same_name_is_refused():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    mine, theirs = _renamed(RULES["oja"], "mine"), _renamed(RULES["hpca"], "mine")
    a = hebbopt.HebbianOptimizer(model, mine, lr=0.01)
    with torch.no_grad():
        model(torch.randn(5, 6))
    a.step()
    state = a.state_dict()
    a.close()
    b = hebbopt.HebbianOptimizer(model, theirs, lr=0.01)
    with pytest.raises(ValueError, match=r"rule 'mine' from .* but this optimizer"):
        b.load_state_dict(state)
    b.close()
    same = hebbopt.HebbianOptimizer(model, mine, lr=0.01)
    same.load_state_dict(state)  # its own rule loads
    older = {**state, "param_groups": [{k: v for k, v in g.items() if k != "rule_source"}
                                       for g in state["param_groups"]]}  # fmt: skip
    same.load_state_dict(older)  # a state saved before rules recorded their source
    same.close()
