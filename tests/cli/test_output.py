"""What a user of the command line sees, from real subprocesses: no TensorFlow or absl log lines
unless `--verbose`, tables that fit 120 columns, and `ferqueue info`'s devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

FERQUEUE = str(Path(sys.executable).with_name("ferqueue"))
# what TensorFlow prints while it loads, and absl's log-line prefixes
NOISE = ("oneDNN", "cudart", "absl", "cuda_", "I0000 ", "W0000 ", "E0000 ")


def _ferqueue(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERQUEUE_", "TF_CPP_"))}
    # off a terminal and 400 columns wide: what is measured is the tables' own width
    env.update(FERQUEUE_HOME=str(tmp_path / "home"), COLUMNS="400")
    return subprocess.run([FERQUEUE, *args], env=env, capture_output=True, text=True, timeout=300)


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(mark in line for mark in NOISE)]


def test_run_prints_no_tensorflow_lines_and_fits_120_columns(tmp_path):
    done = _ferqueue(tmp_path, "run", "--dataset", "synthetic:70", "--epochs", "1", "--eps", "0.02",
                     "--pixel-queries", "0", "--no-pgd")
    assert done.returncode == 0, done.stderr
    assert _noise(done.stdout + done.stderr) == [], done.stdout + done.stderr
    assert "accuracy on the test set" in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 120, done.stdout


def test_info_lists_the_devices_and_verbose_lets_tensorflow_speak(tmp_path, settings):
    from click.testing import CliRunner

    from ferqueue.attacks import attack_classes
    from ferqueue.cli import main
    from ferqueue.models import engine

    text = CliRunner().invoke(main, ["info"], catch_exceptions=False).output
    assert "device: CPU:0" in text and "attack batch:" in text
    loud = _ferqueue(tmp_path, "--verbose", "info", "--format", "json")
    assert loud.returncode == 0, loud.stderr
    assert _noise(loud.stderr), "with --verbose TensorFlow's start-up lines get through"
    info = json.loads(loud.stdout)
    assert "CPU" in [d["type"] for d in info["devices"]]
    gpus = bool(info["accelerators"])
    assert info["attack_batch_sizes"] == {cls.name: engine.batch_size(cls.default_batch_size, gpus)
                                          for cls in attack_classes()}
    if not gpus:
        assert "no GPU visible to TensorFlow" in text and "fgsm 32, pgd 32, pixel 32" in text
