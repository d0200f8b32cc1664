"""The paper on CK+48 at full size (slow: about 25 minutes on 2 CPU cores; `ops/test.sh -m slow`)."""

import json

import pytest
from click.testing import CliRunner
from fq_helpers import DATASETS, SHARED

from ferqueue.cli import main

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (DATASETS / "ck48").is_dir(), reason="CK+48 not found in ../shared/datasets"),
    pytest.mark.skipif(not (SHARED / "keras" / "models").is_dir(), reason="no ImageNet weights in ../shared/keras"),
]


def test_mobilenetv2_reaches_97_percent_after_adversarial_training(settings):
    result = CliRunner().invoke(main, ["run", "--dataset", str(DATASETS / "ck48"), "--models", "mobilenetv2",
                                       "--experiment", "ck48"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads(CliRunner().invoke(main, ["results", "--format", "json"]).output)
    clean = {r["mode"]: r["accuracy"] for r in rows if r["setting"] == "clean"}
    assert clean["offline_adv"] >= 0.97, clean
    runs = json.loads(CliRunner().invoke(main, ["runs", "--format", "json"]).output)
    assert all(r["num_params"] == 2_422_855 and r["weights"] == "imagenet" for r in runs)
