"""Attack batch sizes follow the device: each attack's own large batch on an accelerator, the
engine's CPU batch on a CPU.

No GPU exists here, so the accelerator case replaces the engine's list of GPUs, the one
function that asks TensorFlow for them; everything else (the model, the attack, the passes
it makes) runs for real.
"""

from __future__ import annotations

import weakref

import pytest

from ferqueue.attacks import FGSM, PGD, PixelAttack, attack_classes
from ferqueue.models import engine

ATTACKS = {FGSM: lambda: FGSM(eps=0.02), PGD: lambda: PGD(eps=0.02, steps=2),
           PixelAttack: lambda: PixelAttack(k=1, method="random", queries=4, seed=0)}


def test_every_attack_is_covered():
    assert set(attack_classes()) == set(ATTACKS)
    assert PixelAttack.default_batch_size > FGSM.default_batch_size > engine.CPU_BATCH_SIZE


@pytest.mark.parametrize("gpu", [False, True], ids=["cpu", "gpu"])
@pytest.mark.parametrize("cls", list(ATTACKS), ids=lambda cls: cls.name)
def test_attack_batches_follow_the_device(trained, monkeypatch, cls, gpu):
    monkeypatch.setattr(engine, "accelerators", lambda: ["/device:GPU:0"] if gpu else [])
    monkeypatch.setattr(engine, "_CACHE", weakref.WeakKeyDictionary())  # the model's functions, made anew
    seen: list[int] = []
    predict = engine.ModelFunctions.predict

    def recording(self, x, batch_size):
        seen.append(batch_size)
        return predict(self, x, batch_size)

    monkeypatch.setattr(engine.ModelFunctions, "predict", recording)
    result = ATTACKS[cls]()(trained.model, trained.x[:6], trained.y[:6])
    assert len(result.x_adv) == 6
    assert set(seen) == {cls.default_batch_size if gpu else engine.CPU_BATCH_SIZE}
    assert engine.compiled(trained.model).on_accelerator is gpu


def test_the_real_device_list_of_this_machine():
    names = [d["type"] for d in engine.devices()]
    assert "CPU" in names
    assert engine.batch_size(2048, on_accelerator=bool(engine.accelerators())) in (2048, engine.CPU_BATCH_SIZE)
