"""Evaluation protocols: features, linear probe, kNN and retrieval against literal computations; the
sweep's ``linear``/``knn`` protocols end to end with resume."""

import json
import sys
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from hebbopt.data import load_dataset
from hebbopt.evaluation import (
    dropout_,
    extract_features,
    feature_scaler,
    knn,
    linear_probe,
    milestones,
    retrieval,
)
from hebbopt.sweeps import semisup
from hebbopt.training import ConfigError, load

TINY = [
    "--data.name", "synthetic", "--data.synthetic_size", "96", "--data.img_size", "32",
    "--model.kwargs", "{width: 0.125}", "--run.progress", "false",
    "--pretrain.epochs", "1", "--pretrain.batch_size", "32", "--pretrain.compile", "false",
    "--finetune.epochs", "1", "--finetune.batch_size", "16", "--finetune.lr", "0.01",
    "--probe.epochs", "5", "--probe.knn_k", "[1, 5]",
]  # fmt: skip


def random_features(seed, n_train=60, n_test=25, dim=7, classes=4):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(n_train, dim, generator=g),
        torch.randint(0, classes, (n_train,), generator=g),
        torch.randn(n_test, dim, generator=g),
        torch.randint(0, classes, (n_test,), generator=g),
    )


def brute_knn(train_x, train_y, test_x, k):
    """One query at a time: cosine similarities, the k nearest, Counter vote, ties to the class met first."""
    a = train_x.double().numpy()
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    out = []
    for q in test_x.double().numpy():
        sims = a @ (q / np.linalg.norm(q))
        near = [int(train_y[i]) for i in np.argsort(-sims, kind="stable")[:k]]
        votes = Counter(near)
        most = max(votes.values())
        out.append(next(c for c in near if votes[c] == most))
    return torch.tensor(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_knn_matches_a_brute_force_loop(seed):
    train_x, train_y, test_x, test_y = random_features(seed)
    train_y[:4] = torch.tensor([0, 1, 2, 3])  # every class present
    got = knn(train_x, train_y, test_x, test_y, k=[1, 4, 6, 20, 100], chunk_size=7, predictions=True)
    for k, result in got.items():
        expected = brute_knn(train_x, train_y, test_x, min(k, 60))
        assert torch.equal(result["predictions"], expected), k
        assert result["top1"] == pytest.approx(100 * (expected == test_y).double().mean().item())
        assert result["top1"] <= result["top5"] == 100.0  # 4 classes: top-5 holds them all
    single = knn(train_x, train_y, test_x, test_y, k=6)
    assert single["top1"] == got[6]["top1"] and single["k"] == 6 and single["images"] == 25


def test_knn_breaks_vote_ties_by_the_nearest_neighbour():
    train_x = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    train_y = torch.tensor([2, 1, 1, 2])  # k = 4: two votes each; class 2 has the nearest
    got = knn(train_x, train_y, torch.tensor([[1.0, 0.0]]), torch.tensor([2]), k=4, predictions=True)
    assert got["predictions"].tolist() == [2] and got["top1"] == 100.0


@pytest.mark.parametrize("seed", [0, 1])
def test_retrieval_matches_sklearn_average_precision(seed):
    train_x, train_y, test_x, test_y = random_features(seed, n_train=80, n_test=30, classes=3)
    train_y[:3] = torch.tensor([0, 1, 2])
    got = retrieval(train_x, train_y, test_x, test_y, ks=(1, 10, 50, 200), chunk_size=4)
    a = train_x.double().numpy()
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    aps, precision = [], {k: [] for k in (1, 10, 50, 200)}
    for q, y in zip(test_x.double().numpy(), test_y.tolist(), strict=True):
        sims = a @ (q / np.linalg.norm(q))
        relevant = train_y.numpy() == y
        aps.append(average_precision_score(relevant, sims))
        ranked = relevant[np.argsort(-sims, kind="stable")]
        for k in precision:
            precision[k].append(ranked[: min(k, 80)].mean())
    assert got["map"] == pytest.approx(100 * np.mean(aps), abs=1e-9)
    for k, values in precision.items():
        assert got[f"p@{k}"] == pytest.approx(100 * np.mean(values), abs=1e-9)
    assert got["queries"] == got["queries_with_relevant"] == 30


def separable(seed, n=400, dim=20, classes=4):
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(classes, dim, generator=g)
    y = torch.arange(n) % classes
    return centres[y] + 0.3 * torch.randn(n, dim, generator=g), y


def test_linear_probe_learns_a_separable_problem_and_is_deterministic():
    x, y = separable(0)
    x, y, tx, ty = x[:300], y[:300], x[300:], y[300:]
    kwargs = dict(num_classes=4, epochs=10, batch_size=32, lr=1e-2, seed=3, val=(tx[:20], ty[:20]))
    a = linear_probe(x, y, tx, ty, **kwargs)
    b = linear_probe(x, y, tx, ty, **kwargs)
    c = linear_probe(x, y, tx, ty, **{**kwargs, "seed": 4})
    assert a["test"]["top1"] == 100.0 and a["val"]["top1"] == 100.0 and a["features"] == 20
    assert a == b
    assert [h["loss"] for h in a["history"]] != [h["loss"] for h in c["history"]]
    assert a["history"][-1]["loss"] < a["history"][0]["loss"]
    state = torch.get_rng_state()
    linear_probe(x[:10], y[:10], tx, ty, num_classes=4, epochs=1, seed=0)
    assert torch.equal(state, torch.get_rng_state())  # the global random state is left alone


def test_linear_probe_halves_the_learning_rate_at_the_milestones():
    assert milestones(50) == [10, 17, 25, 30, 35, 40, 45]
    x, y = separable(0, n=40)
    result = linear_probe(x, y, x, y, num_classes=4, epochs=50, batch_size=64, lr=1e-3, seed=0)
    lrs = [h["lr"] for h in result["history"]]
    expected = [1e-3 * 0.5 ** sum(m <= e for m in milestones(50)) for e in range(50)]
    assert lrs == pytest.approx(expected)
    assert lrs[9] == 1e-3 and lrs[10] == 5e-4 and lrs[17] == 2.5e-4 and lrs[49] == pytest.approx(1e-3 / 128)
    assert result["best_epoch"] == 50 and "val" not in result


def test_linear_probe_refuses_bad_settings():
    x, y = separable(0, n=8)
    with pytest.raises(ValueError, match="dropout"):
        linear_probe(x, y, x, y, num_classes=4, dropout=1.0)
    with pytest.raises(ValueError, match="N×D"):
        linear_probe(x, y[:3], x, y, num_classes=4)


def test_extract_features_is_the_frozen_pre_classifier_output():
    import timm

    import hebbopt  # noqa: F401  (registers the models)

    splits = load_dataset("synthetic", img_size=32, synthetic_size=20)
    model = timm.create_model("hebb_alexnet_6l", num_classes=10, width=0.125, img_size=32)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    feats = extract_features(model, splits.train, indices=torch.tensor([3, 1, 4]), batch_size=2)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    model.eval()
    with torch.no_grad():
        x = splits.train.batch(torch.tensor([3, 1, 4]))[0]
        expected = model.forward_head(model.forward_features(x), pre_logits=True)
    assert feats.dtype == torch.float32 and feats.shape == (3, model.head_hidden_size)
    torch.testing.assert_close(feats, expected)
    raw = splits.train.images[:5]
    maps = extract_features(model, raw, mean=splits.mean, std=splits.std, pre_logits=False)
    with torch.no_grad():
        direct = model.forward_features(splits.train.batch(torch.arange(5))[0]).flatten(1)
    torch.testing.assert_close(maps, direct, rtol=1e-5, atol=1e-5)


METHODS = ("hpca", "none")  # a pre-trained backbone (its weights loaded) and a random start


def tiny(tmp_path, *extra):
    return load(None, [*TINY, "--run.dir", str(tmp_path / "run"), *extra])


def test_sweep_with_linear_and_knn_protocols_records_them_and_resumes(tmp_path, monkeypatch):
    args = (
        "--sweep.methods", f"[{', '.join(METHODS)}]", "--sweep.regimes", "[20, 50]", "--sweep.seeds", "[0]",
        "--sweep.protocols", "[finetune, linear, knn]", "--data.val_size", "8",
    )  # fmt: skip
    first = semisup(tiny(tmp_path, *args))
    run = tmp_path / "run"
    records = json.loads((run / "results.json").read_text())["results"]
    assert records == first["results"]
    got = {(r["protocol"], r["method"], r["regime"]) for r in records}
    protocols = ("finetune", "linear", "knn")
    assert got == {(p, m, s) for p in protocols for m in METHODS for s in (20.0, 50.0)}
    assert [r["protocol"] for r in records] == [p for m in METHODS for p in protocols for s in (20, 50)]
    for r in records:
        assert list(r)[list(r).index("method") + 1] == "protocol" and "history" not in r
        assert r["seed"] == 0 and 0 <= r["test"]["top1"] <= 100 and r["test"]["images"] == 24
        assert r["labelled"] == {20.0: 18, 50.0: 44}[r["regime"]]
        assert "val" in r or r["protocol"] == "finetune"
        if r["protocol"] == "knn":
            assert r["k"] in (1, 5) and set(r["by_k"]) == {"1", "5"} and "map" in r["retrieval"]
    table = (run / "table.md").read_text()
    assert "| regime | method | protocol |" in table and "| 20 % | hpca | linear |" in table
    assert "| 50 % | none | knn |" in table and "| 50 % | none | finetune |" in table
    assert table.split("\n\n")[0].count("\n") == 1 + 12  # the rows; notes follow a blank line
    assert (run / "linear" / "hpca-seed0-20pct" / "metrics.json").exists()
    with pytest.raises(ConfigError, match="--resume"):
        semisup(tiny(tmp_path, *args))
    module = sys.modules["hebbopt.training.pretrain"]
    monkeypatch.setattr(module, "hebbian_optimizer", lambda *a: pytest.fail("pre-trained again"))
    probe = sys.modules["hebbopt.sweeps.semisup"]
    monkeypatch.setattr(probe, "extract_features", lambda *a, **k: pytest.fail("features again"))
    monkeypatch.setattr("torch.optim.SGD.step", lambda *a, **k: pytest.fail("fine-tuned again"))
    again = semisup(tiny(tmp_path, *args), resume=True)
    assert again["results"] == first["results"]


def test_protocols_are_checked_and_default_to_finetune():
    assert load(None, []).sweep.protocols == ["finetune"]
    with pytest.raises(ConfigError, match=r"sweep\.protocols"):
        load(None, ["--sweep.protocols", "[linear, probe]"])
    with pytest.raises(ConfigError, match=r"probe\.dropout"):
        load(None, ["--probe.dropout", "1"])
    with pytest.raises(ConfigError, match=r"probe\.normalize"):
        load(None, ["--probe.normalize", "whiten"])
    assert load(None, ["--probe.normalize", "standardize"]).probe.normalize == "standardize"


@pytest.mark.parametrize("p", [0.5, 0.1, 0.9])
def test_dropout_keeps_each_element_with_its_probability_and_preserves_the_mean(p):
    seed = int(torch.randint(0, 2**31, ()))
    x = torch.rand(257, 301) + 0.5  # odd sizes: the 64-bit draws are cut to the element count
    out = dropout_(x.clone(), p, torch.Generator().manual_seed(seed))
    kept = out != 0
    q = round(65536 * (1 - p)) / 65536
    n = x.numel()
    assert abs(kept.double().mean().item() - q) < 5 * (q * (1 - q) / n) ** 0.5
    torch.testing.assert_close(out[kept], x[kept] / q)
    # no structure along rows or columns (each element draws its own bits)
    for dim in (0, 1):
        frac = kept.double().mean(dim)
        assert (frac - q).abs().max() < 6 * (q * (1 - q) / kept.shape[dim]) ** 0.5
    again = dropout_(x.clone(), p, torch.Generator().manual_seed(seed))
    assert torch.equal(out, again)
    other = dropout_(x.clone(), p, torch.Generator().manual_seed(seed + 1))
    assert not torch.equal(out, other)


def test_feature_scaler_standardizes_per_feature_and_scales_rows_to_unit_mean_square():
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    x = torch.randn(300, 9, generator=g) * torch.rand(9, generator=g) * 50 + 1000 * torch.rand(9, generator=g)
    x[:, 4] = 3.0  # a dead unit: constant, stays finite (0) after scaling
    z = feature_scaler(x, "standardize", chunk=37)(x).double()
    live = [i for i in range(9) if i != 4]
    torch.testing.assert_close(z.mean(0), torch.zeros(9, dtype=torch.float64), atol=1e-4, rtol=0)
    ones = torch.ones(8, dtype=torch.float64)
    torch.testing.assert_close(z[:, live].std(0, unbiased=False), ones, atol=1e-4, rtol=0)
    assert torch.equal(z[:, 4], torch.zeros(300, dtype=torch.float64))
    rows = feature_scaler(x, "l2")(x)
    torch.testing.assert_close(rows.square().mean(1), torch.ones(300))
    torch.testing.assert_close(rows / rows.norm(dim=1, keepdim=True), x / x.norm(dim=1, keepdim=True))
    assert feature_scaler(x, "none") is None
    with pytest.raises(ValueError, match="normalize"):
        feature_scaler(x, "whiten")


@pytest.mark.parametrize("how", ["standardize", "l2"])
def test_linear_probe_with_normalize_equals_the_probe_on_scaled_features(how):
    train_x, train_y, test_x, test_y = random_features(int(torch.randint(0, 2**31, ())))
    train_x, test_x = train_x * 40 + 7, test_x * 40 + 7
    val = (test_x[:10], test_y[:10])
    prep = feature_scaler(train_x, how)
    kwargs = dict(num_classes=4, epochs=6, batch_size=16, seed=3)
    got = linear_probe(train_x, train_y, test_x, test_y, val=val, normalize=how, **kwargs)
    want = linear_probe(prep(train_x), train_y, prep(test_x), test_y, val=(prep(val[0]), val[1]), **kwargs)
    assert (got["test"], got["val"], got["best_epoch"]) == (want["test"], want["val"], want["best_epoch"])
    for a, b in zip(got["history"], want["history"], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)


def test_extract_features_of_mirrored_images():
    import timm

    import hebbopt  # noqa: F401  (registers the models)

    splits = load_dataset("synthetic", img_size=32, synthetic_size=20)
    model = timm.create_model("softhebb_3l", num_classes=10)
    rows = torch.tensor([5, 0, 2])
    got = extract_features(model, splits.train, indices=rows, pre_logits=False, flip=True)
    model.eval()
    with torch.no_grad():
        want = model.forward_features(torch.flip(splits.train.batch(rows)[0], dims=[-1])).flatten(1)
    torch.testing.assert_close(got, want)
    assert (got - extract_features(model, splits.train, indices=rows, pre_logits=False)).abs().max() > 1e-3


def test_linear_probe_with_flips_draws_each_sample_from_the_image_or_its_mirror():
    train_x, train_y, test_x, test_y = random_features(int(torch.randint(0, 2**31, ())))
    kwargs = dict(num_classes=4, epochs=4, batch_size=16, seed=5, val=(test_x[:10], test_y[:10]))
    plain = linear_probe(train_x, train_y, test_x, test_y, **kwargs)
    # Mirrors identical to the images: the flips change nothing (the coin has its own stream).
    same = linear_probe(train_x, train_y, test_x, test_y, flipped_x=train_x.clone(), **kwargs)
    assert same == plain
    # Class information only in the mirrors: a probe that sees them (about half the time) learns it.
    g = torch.Generator().manual_seed(int(torch.randint(0, 2**31, ())))
    centres = 5 * torch.randn(10, 20, generator=g)
    y, test_y = torch.arange(400) % 10, torch.arange(200) % 10
    informative = centres[y] + 0.1 * torch.randn(400, 20, generator=g)
    noise = torch.randn(400, 20, generator=g)
    test = (centres[test_y] + 0.1 * torch.randn(200, 20, generator=g), test_y)
    kwargs = dict(num_classes=10, epochs=10, batch_size=32, lr=1e-2, seed=5, dropout=0.0)
    blind = linear_probe(noise, y, *test, **kwargs)["test"]["top1"]
    seeing = linear_probe(noise, y, *test, flipped_x=informative, **kwargs)["test"]["top1"]
    assert seeing > 95 and blind < 70  # blind: each class right by chance, ~10 % each
    with pytest.raises(ValueError, match="flipped_x"):
        linear_probe(train_x, train_y, *test, num_classes=10, flipped_x=train_x[:-1])


def test_sweep_with_probe_flip_hands_the_mirrored_features_to_the_linear_probe(tmp_path, monkeypatch):
    module = sys.modules["hebbopt.sweeps.semisup"]
    calls, seen = [], []
    real_extract, real_probe = module.extract_features, module.linear_probe

    def extract(model, images, **kw):
        calls.append(kw.get("flip", False))
        return real_extract(model, images, **kw)

    def probe(train_x, *args, flipped_x=None, **kw):
        seen.append((train_x.shape, None if flipped_x is None else flipped_x.shape))
        assert flipped_x is not None and not torch.equal(flipped_x, train_x)
        return real_probe(train_x, *args, flipped_x=flipped_x, **kw)

    monkeypatch.setattr(module, "extract_features", extract)
    monkeypatch.setattr(module, "linear_probe", probe)
    args = ("--sweep.methods", "[none]", "--sweep.regimes", "[50]", "--sweep.seeds", "[0]",
            "--sweep.protocols", "[linear]", "--data.val_size", "8", "--probe.flip", "true")  # fmt: skip
    semisup(tiny(tmp_path, *args))
    assert sorted(calls) == [False, False, False, True]  # train, val, test, mirrored train
    assert seen == [(torch.Size([44, seen[0][0][1]]), torch.Size([44, seen[0][0][1]]))]
