"""Shell completion as a user gets it: the script `ferqueue completion bash` prints, loaded into a
real bash, asked for words through bash's own completion variables."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ferqueue.cluster import FERQUEUE
from ferqueue.db import ledger

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def _env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("_FERQUEUE")}
    return {**base, "PATH": f"{Path(FERQUEUE).parent}:{base['PATH']}", "TF_CPP_MIN_LOG_LEVEL": "3", **extra}


def complete(words: list[str], env: dict[str, str]) -> list[str]:
    """What bash offers after ``words`` (the last one being completed), through the script."""
    script = subprocess.run([FERQUEUE, "completion", "bash"], env=env, capture_output=True, text=True, check=True,
                            timeout=120).stdout
    quoted = " ".join(f"'{w}'" for w in words)
    program = (f"{script}\nCOMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; COMPREPLY=()\n"
               "_ferqueue_completion ferqueue\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    result = subprocess.run([BASH, "--norc", "-c", program], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stdout.splitlines() if line]


def test_bash_completes_commands_options_and_choices(settings):
    env = _env(FERQUEUE_HOME=str(settings.home))
    assert {"submit", "status", "store"} <= set(complete(["ferqueue", "s"], env))
    assert complete(["ferqueue", "submit", "g"], env) == ["generate"]
    assert "--dataset" in complete(["ferqueue", "run", "--da"], env)
    assert set(complete(["ferqueue", "run", "--split", ""], env)) == {"random", "subject", "predefined"}


def test_bash_completes_job_ids_from_the_ledger(rt, settings):
    ids = [ledger.create_job(rt.db, "generate", {}).id for _ in range(12)]
    env = _env(FERQUEUE_HOME=str(settings.home))
    assert set(complete(["ferqueue", "status", ""], env)) == {str(i) for i in ids}
    assert complete(["ferqueue", "resume", "1"], env) == sorted(str(i) for i in ids if str(i).startswith("1"))[::-1]


def test_completion_without_a_ledger_offers_nothing_and_prints_no_error(tmp_path):
    env = _env(FERQUEUE_HOME=str(tmp_path / "nowhere"), FERQUEUE_DATABASE_URL="postgresql+psycopg2://u@127.0.0.1:1/x")
    assert complete(["ferqueue", "cancel", ""], env) == []


def test_completion_names_the_shell_or_says_which_it_needs(tmp_path):
    for shell in ("bash", "zsh", "fish"):
        out = subprocess.run([FERQUEUE, "completion", shell], env=_env(), capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "_FERQUEUE_COMPLETE" in out.stdout, out.stderr
    out = subprocess.run([FERQUEUE, "completion"], env=_env(SHELL="/bin/tcsh"), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "SHELL='/bin/tcsh'" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
