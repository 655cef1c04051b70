"""The FastHebb journal's VGG11 recipe (224 px, batch 32) runs on a small ImageNet-format folder."""

import pathlib

import torch
from PIL import Image

from hebbopt.sweeps import semisup
from hebbopt.training import load

ROOT = pathlib.Path(__file__).parents[1]


def test_vgg11_recipe_on_a_small_imagenet_folder(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 4), ("val", 1)):
        for c in ("n01440764", "n01443537"):
            (tmp_path / "imagenet" / split / c).mkdir(parents=True)
            for i in range(n):
                pixels = torch.randint(0, 256, (240, 260, 3), dtype=torch.uint8, generator=g)
                Image.fromarray(pixels.numpy()).save(tmp_path / "imagenet" / split / c / f"{i}.JPEG")
    monkeypatch.setenv("HEBBOPT_DATA", str(tmp_path))
    cfg = load(
        ROOT / "recipes" / "configs" / "imagenet_vgg11.yaml",
        [
            "--data.workers", "0", "--data.val_size", "2", "--data.cache", str(tmp_path / "cache"),
            "--pretrain.epochs", "1", "--sweep.methods", "[hpca]", "--sweep.regimes", "[100]",
            "--sweep.protocols", "[linear]", "--probe.epochs", "1", "--run.mixed_precision", "no",
            "--run.progress", "false", "--run.dir", str(tmp_path / "run"),
        ],
    )  # fmt: skip
    assert (cfg.model.name, cfg.data.img_size, cfg.pretrain.batch_size) == ("vgg11", 224, 32)
    summary = semisup(cfg)
    [record] = summary["results"]
    assert record["protocol"] == "linear" and record["method"] == "hpca" and record["test"]["images"] == 2
    assert (tmp_path / "run" / "pretrain" / "hpca-seed0" / "backbone.safetensors").exists()
