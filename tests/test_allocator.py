"""The recipes keep freed memory in the process (glibc mallopt), unless HEBBOPT_MALLOC=system."""

import os
import subprocess
import sys

import pytest

CODE = "from hebbopt.cli import keep_freed_memory; print(keep_freed_memory())"


def _run(env):
    out = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_recipes_keep_freed_memory_on_glibc_and_leave_it_when_asked():
    env = {k: v for k, v in os.environ.items() if k != "HEBBOPT_MALLOC"}
    import platform

    expected = "True" if platform.libc_ver()[0] == "glibc" else "False"
    assert _run(env) == expected
    assert _run({**env, "HEBBOPT_MALLOC": "system"}) == "False"


def test_every_recipe_command_sets_it_before_running(monkeypatch):
    from hebbopt import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1) or True)
    for main in (cli.pretrain_main, cli.finetune_main, cli.semisup_main):
        with pytest.raises(SystemExit) as stop:
            main(["--config", "/nonexistent/config.yaml"])  # refused, after the setting
        assert stop.value.code == 2
    assert len(calls) == 3
