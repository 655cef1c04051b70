"""run.mixed_precision: auto picks bf16 only where the device has bf16 units, resolved when the
configuration is read (so the run folder and records hold what ran); bf16 asked for on a device
without them warns, with what to set instead."""

import warnings

import pytest
import yaml

from hebbopt.training import load, precision
from hebbopt.training.config import dump
from hebbopt.training.setup import make_accelerator

BASE = ["--data.name", "synthetic", "--run.cpu", "true"]


@pytest.mark.parametrize("units", [True, False])
def test_auto_resolves_by_the_devices_bf16_units(monkeypatch, units):
    seen = []

    def fake(device_type):
        seen.append(device_type)
        return units

    monkeypatch.setattr(precision, "bf16_units", fake)
    cfg = load(None, [*BASE, "--run.mixed_precision", "auto"])
    assert cfg.run.mixed_precision == ("bf16" if units else "no") and seen == ["cpu"]
    for kept in ("no", "bf16", "fp16"):
        assert load(None, [*BASE, "--run.mixed_precision", kept]).run.mixed_precision == kept
    written = dump(load(None, [*BASE, "--run.mixed_precision", "auto"]))  # a run folder's config.yaml
    assert yaml.safe_load(written)["run"]["mixed_precision"] == ("bf16" if units else "no")


@pytest.fixture
def fresh_accelerate():  # the precision is process-wide state of accelerate
    from accelerate.state import AcceleratorState, GradientState

    def reset():
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()

    yield reset
    reset()


def test_bf16_without_units_warns_and_says_what_to_set(monkeypatch, fresh_accelerate):
    monkeypatch.setattr(precision, "bf16_units", lambda device_type: False)
    fresh_accelerate()
    with pytest.warns(RuntimeWarning, match="run.mixed_precision: no"):
        make_accelerator(load(None, [*BASE, "--run.mixed_precision", "bf16"]))
    monkeypatch.setattr(precision, "bf16_units", lambda device_type: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for choice in ("bf16", "no"):
            fresh_accelerate()
            make_accelerator(load(None, [*BASE, "--run.mixed_precision", choice]))


def test_this_cpus_answer_matches_its_instruction_set():
    import torch

    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert precision.bf16_units("cpu") == native
    assert precision.resolve("auto", cpu=True) == ("bf16" if native else "no")


def test_an_unknown_choice_names_auto():
    from hebbopt.training import ConfigError

    with pytest.raises(ConfigError, match="auto"):
        load(None, [*BASE, "--run.mixed_precision", "bf32"])
