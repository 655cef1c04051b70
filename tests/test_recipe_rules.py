"""The recipes take every registered rule: ``pretrain.method`` choices, ``pretrain.rule_kwargs``,
and the SoftHebb networks' per-layer defaults as param groups."""

import pytest
import torch
from safetensors.torch import load_file
from test_recipes import tiny

from hebbopt.data import load_dataset
from hebbopt.models.softhebb import SOFTHEBB_LAYER_HYPER
from hebbopt.rules import RULES
from hebbopt.training import ConfigError, pretrain
from hebbopt.training.models import build_model
from hebbopt.training.pretrain import hebbian_optimizer


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_pretrains_through_the_recipe(tmp_path, rule):
    cfg = tiny(tmp_path, "--pretrain.method", rule, "--pretrain.lr", "0.01")
    backbone = load_file(pretrain(cfg))
    init = build_model(cfg, load_dataset("synthetic", synthetic_size=96, img_size=32), seed=0)
    assert not torch.equal(backbone["features.0.weight"], init.features[0].weight.detach())
    assert torch.equal(backbone["classifier.weight"], init.classifier.weight.detach())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ("{swta: {temperature: 0}}", "invalid temperature"),
        ("{krotov: {k: 1}}", "invalid k"),
        ("{hpca: {temperature: 0.1}}", "no hyper-parameter"),
        ("{nope: {}}", "unknown rule 'nope'"),
        ("{softhebb: 0.5}", "must be a mapping"),
    ],
)
def test_bad_rule_kwargs_fail_before_a_run_folder_exists(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        tiny(tmp_path, "--pretrain.rule_kwargs", kwargs)
    assert not (tmp_path / "run").exists()


def test_softhebb_network_gets_the_paper_layer_settings(tmp_path):
    cfg = tiny(
        tmp_path, "--model.name", "softhebb_3l", "--pretrain.method", "softhebb",
        "--pretrain.rule_kwargs", "{softhebb: {power_lr: 0.0}}",
    )  # fmt: skip
    model = build_model(cfg, load_dataset("synthetic", synthetic_size=96, img_size=32), seed=0)
    opt = hebbian_optimizer(cfg, {n: model.get_submodule(n) for n in SOFTHEBB_LAYER_HYPER["softhebb_3l"]})
    got = [(g["layers"], g["lr"], g["temperature"], g["power_lr"]) for g in opt.param_groups]
    paper = SOFTHEBB_LAYER_HYPER["softhebb_3l"]
    assert got == [([n], h["lr"], h["temperature"], 0.0) for n, h in paper.items()]
    assert [round(g[2], 4) for g in got] == [1.0, round(1 / 0.65, 4), 4.0]


def test_no_recipe_branches_on_a_rule_name():
    """The recipes ask the registry (and hebbopt.models.layer_hyper), never compare a rule's name."""
    import pathlib
    import re

    from hebbopt.rules import RULES

    root = pathlib.Path(__file__).resolve().parents[1]
    names = "|".join(map(re.escape, RULES))
    compare = re.compile(rf"""(==|!=|\bin)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    sources = [*(root / "src/hebbopt/training").glob("*.py"), *(root / "recipes").glob("*.py")]
    found = [f"{p.name}: {line.strip()}" for p in sources for line in p.read_text().splitlines()
             if compare.search(line)]  # fmt: skip
    assert not found, found
    assert compare.search('paper = p.layer_defaults and p.method == "softhebb"')  # what it catches
