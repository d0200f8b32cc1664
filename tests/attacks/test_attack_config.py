"""Configuring attacks: names, parameters, keys, specs and the errors for bad values."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ferqueue.attacks import ATTACK_NAMES, FGSM, PGD, AttackResult, PixelAttack, make_attack, parse_attack
from ferqueue.attacks.base import SAFE_KEY
from ferqueue.errors import ConfigError, DataError

SPECS = [
    "fgsm:eps=0.01",
    "fgsm:eps=0.03,random_start=true",
    "fgsm:eps=0.03,random_start=true,alpha=0.05,seed=4",
    "fgsm:eps=1",
    "pgd:eps=0.03,steps=10",
    "pgd:eps=0.03,steps=10,step_size=0.01",
    "pgd:eps=0.03,random_start=false",
    "pgd:eps=1e-05,steps=7,seed=2",
    "pixel",
    "pixel:k=3,queries=250",
    "pixel:k=1,method=de,popsize=400,maxiter=100",
    "pixel:k=2,method=de,popsize=50,maxiter=0,seed=9",
]


def test_names_and_default_keys():
    assert ATTACK_NAMES == ("fgsm", "pgd", "pixel")
    assert FGSM(0.01).key == "fgsm-eps0.01"
    assert PGD(0.03, steps=10).key == "pgd-eps0.03-steps10"
    assert PixelAttack().key == "pixel-random-k1-q100"
    assert PixelAttack(method="de").key == "pixel-de-k1-p400-g100"
    assert PGD(0.03).params == {
        "eps": 0.03,
        "steps": 10,
        "step_size": 0.0075,
        "random_start": True,
        "seed": 0,
    }
    assert PixelAttack(method="de").params == {
        "k": 1,
        "method": "de",
        "popsize": 400,
        "maxiter": 100,
        "seed": 0,
    }


@pytest.mark.parametrize("spec", SPECS)
def test_spec_and_params_round_trip(spec):
    attack = parse_attack(spec)
    again = parse_attack(attack.spec)
    assert again.params == attack.params and again.key == attack.key
    rebuilt = make_attack(attack.name, **attack.params)
    assert rebuilt == attack and rebuilt.key == attack.key
    assert SAFE_KEY.match(attack.key), attack.key


def test_keys_are_distinct_for_distinct_params_and_equal_for_equal_params():
    attacks = [parse_attack(spec) for spec in SPECS]
    assert len({a.key for a in attacks}) == len(attacks)
    assert PGD(0.03, steps=10, step_size=0.0075).key == PGD(0.03).key
    assert make_attack("fgsm", eps=0.01) == FGSM(eps=0.01)
    assert parse_attack("pgd: eps = 0.03 , steps=10").key == "pgd-eps0.03-steps10"


@pytest.mark.parametrize("eps", [0, -0.1, 1.5])
@pytest.mark.parametrize("name", ["fgsm", "pgd"])
def test_epsilon_outside_the_unit_interval_is_refused(name, eps):
    with pytest.raises(ConfigError, match=rf"epsilon {eps} is outside \(0, 1\]"):
        make_attack(name, eps=eps)
    with pytest.raises(ConfigError, match=f"epsilon {eps} "):
        parse_attack(f"{name}:eps={eps}")


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: make_attack("cw", c=1), "unknown attack 'cw'; choose one of fgsm, pgd, pixel"),
        (lambda: parse_attack("deepfool"), "unknown attack 'deepfool'"),
        (lambda: make_attack("fgsm", eps=0.1, epsilon=0.2), "unknown parameter epsilon for attack 'fgsm'"),
        (lambda: parse_attack("pixel:pixels=2"), "unknown parameter pixels"),
        (lambda: make_attack("fgsm"), "attack 'fgsm' needs eps"),
        (lambda: PixelAttack(k=0), "k 0 must be an integer >= 1"),
        (lambda: parse_attack("pixel:k=-2"), "k -2 must be an integer >= 1"),
        (lambda: PixelAttack(k=1.5), "k 1.5 must be an integer"),
        (lambda: PixelAttack(method="ga"), "pixel method 'ga' is unknown"),
        (lambda: PixelAttack(method="de", popsize=3), "popsize 3 must be an integer >= 4"),
        (lambda: PixelAttack(queries=10, method="de"), "queries 10 does not apply to pixel method 'de'"),
        (lambda: PixelAttack(popsize=10), "popsize 10 does not apply to pixel method 'random'"),
        (lambda: PGD(0.1, steps=0), "steps 0 must be an integer >= 1"),
        (lambda: PGD(0.1, step_size=-1), "step_size -1 must be a positive number"),
        (lambda: FGSM(0.1, alpha=0.2), "alpha 0.2 is the random-start step size"),
        (lambda: FGSM("0.1"), "epsilon '0.1' is not a number"),
        (lambda: FGSM(float("nan")), "epsilon nan is not a finite number"),
        (lambda: FGSM(0.1, random_start="yes"), "random_start 'yes' must be true or false"),
        (lambda: parse_attack("pgd:eps"), "'eps' is not name=value"),
        (lambda: parse_attack("pgd:eps=0.1,eps=0.2"), "sets eps twice"),
    ],
)
def test_bad_configuration_is_refused_with_the_value(call, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        call()


def test_bad_batches_are_refused_at_the_call(trained):
    x, y = trained.x[:4], trained.y[:4]
    with pytest.raises(DataError, match=r"images have shape \(4, 16, 16, 3\)"):
        FGSM(0.1)(trained.model, x[:, :16, :16], y)
    with pytest.raises(DataError, match="image values must lie in"):
        FGSM(0.1)(trained.model, x * 255, y)
    with pytest.raises(DataError, match="labels 9 at index 0 is outside 0..3"):
        FGSM(0.1)(trained.model, x, np.full(4, 9))
    with pytest.raises(DataError, match="labels must be 4 integer class indices"):
        FGSM(0.1)(trained.model, x, y[:3])
    with pytest.raises(ConfigError, match="target equals the true label"):
        FGSM(0.1)(trained.model, x, y, target=y)
    with pytest.raises(ConfigError, match="batch size 0"):
        FGSM(0.1)(trained.model, x, y, batch_size=0)


@pytest.mark.parametrize("spec", ["fgsm:eps=0.1", "pgd:eps=0.03", "pixel:method=de"])
def test_an_empty_batch_gives_an_empty_result(trained, spec):
    result = parse_attack(spec)(trained.model, np.zeros((0, 32, 32, 3), np.float32), np.zeros(0, np.int64))
    assert (
        result.x_adv.shape == (0, 32, 32, 3) and result.queries.shape == (0,) and result.summary()["n"] == 0
    )


def test_importing_attacks_does_not_import_tensorflow():
    code = "import sys, ferqueue.attacks; ferqueue.attacks.parse_attack('pgd:eps=0.1'); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    "spec", ["fgsm:eps=0.05", "pgd:eps=0.03,steps=3", "pixel:method=de,popsize=8,maxiter=2"]
)
def test_generation_time_is_measured_apart_from_scoring(trained, spec):
    x, y = trained.x[:12], trained.y[:12]
    result = parse_attack(spec)(trained.model, x, y)
    assert 0.0 < result.generation_seconds <= result.seconds
    summary = result.summary()
    assert summary["generation_seconds"] == result.generation_seconds
    assert summary["generation_images_per_second"] >= summary["images_per_second"]


def test_a_result_built_without_generation_time_reports_none():
    n = 3
    result = AttackResult(
        attack="fgsm",
        params={"eps": 0.1},
        x_adv=np.zeros((n, 4, 4, 3), np.float32),
        labels=np.zeros(n, np.int64),
        target=None,
        clean_pred=np.zeros(n, np.int64),
        adv_pred=np.ones(n, np.int64),
        clean_conf=np.ones(n, np.float32),
        adv_conf=np.ones(n, np.float32),
        success=np.ones(n, bool),
        queries=np.ones(n, np.int64),
        linf=np.full(n, 0.1, np.float32),
        l0=np.full(n, 16),
        seconds=0.5,
    )
    summary = result.summary()
    assert result.generation_seconds is None
    assert summary["generation_seconds"] is None and summary["generation_images_per_second"] is None
    assert summary["images_per_second"] == 6.0
