"""`ferqueue cross-eval`: a CK+-trained model judged on a FER2013-layout dataset, classes
mapped by emotion, unmapped ones counted and reported."""

import numpy as np
import pytest
from click.testing import CliRunner
from fq_helpers import register_tiny
from PIL import Image
from sqlalchemy import select

from ferqueue.cli import main

# where each synthetic (CK+-named) class goes in the FER2013 layout; contempt has no FER2013
# counterpart, so its faces are filed as neutral, a class the model does not know
FER_NAME = {"anger": "angry", "contempt": "neutral", "disgust": "disgust", "fear": "fear", "happy": "happy",
            "sadness": "sad", "surprise": "surprise"}


@pytest.fixture
def fer_layout(tmp_path, synthetic_small):
    root = tmp_path / "fer-like"
    counts = {}
    for subset, picks in (("train", range(0, 70)), ("test", range(70, 140))):
        for i in picks:
            name = FER_NAME[synthetic_small.class_names[synthetic_small.labels[i]]]
            folder = root / subset / name
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (synthetic_small.images[i] * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{subset}_{i}.png")
            if subset == "test":
                counts[name] = counts.get(name, 0) + 1
    return root, counts


def test_cross_eval_maps_classes_and_reports_what_it_leaves_out(rt, synthetic_small, tiny_model_file, fer_layout):
    from ferqueue.db.tables import EvaluationRow as Evaluation

    root, counts = fer_layout
    *_, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    result = CliRunner().invoke(main, ["cross-eval", "--model", str(artifact.id), "--dataset", str(root),
                                       "--eps", "0.05", "--experiment", "x"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "angry → anger" in result.output and "sad → sadness" in result.output
    assert "not scored" in result.output and "neutral" in result.output
    assert "contempt" in result.output  # the model class the dataset lacks is named

    with rt.db.session() as s:
        rows = s.scalars(select(Evaluation).order_by(Evaluation.id)).all()
    assert [(r.setting, r.attack_key) for r in rows] == [("clean", "none"), ("whitebox", "fgsm-eps0.05")]
    scored = sum(n for name, n in counts.items() if name != "neutral")
    for row in rows:
        assert row.n == scored
        assert row.unmapped["dataset_classes_without_counterpart"] == {"neutral": counts["neutral"]}
        assert row.unmapped["examples_left_out"] == counts["neutral"]
        assert row.unmapped["examples_scored"] == scored
        assert row.unmapped["model_classes_without_counterpart"] == ["contempt"]
        assert row.class_names == list(synthetic_small.class_names)  # scored in the model's classes
        assert sum(map(sum, row.confusion)) == scored
        # macro recall averages the six mapped classes; contempt (no true examples) is not a zero in it
        conf = np.array(row.confusion)
        mapped = [i for i, c in enumerate(synthetic_small.class_names) if c != "contempt"]
        recalls = [conf[i, i] / conf[i].sum() for i in mapped if conf[i].sum()]
        assert row.recall_macro == pytest.approx(np.mean(recalls))
    # the synthetic faces are the model's own kind of images: mapped labels must agree with it
    assert rows[0].accuracy > 0.6
    assert rows[1].accuracy < rows[0].accuracy


def test_plain_evaluation_refuses_other_classes_and_points_to_cross_eval(rt, synthetic_small, tiny_model_file,
                                                                          fer_layout):
    from ferqueue import jobs
    from ferqueue.data import load_dataset, make_split
    from ferqueue.db import ledger
    from ferqueue.errors import ConfigError
    from ferqueue.jobs import EvaluateSpec

    *_, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    data = load_dataset(str(fer_layout[0]), 32)
    ds_row = ledger.register_dataset(rt.db, data)
    split_row = ledger.register_split(rt.db, ds_row.id, make_split(data, "predefined"))
    with pytest.raises(ConfigError, match="cross-eval"):  # refused when planned, before anything is recorded
        jobs.plan(rt, EvaluateSpec(artifact_id=artifact.id, dataset_id=ds_row.id, split_id=split_row.id))


def test_cross_eval_refuses_a_dataset_with_no_shared_class(rt, synthetic_small, tiny_model_file, tmp_path):
    *_, artifact = register_tiny(rt, synthetic_small, model_file=tiny_model_file)
    root = tmp_path / "neutral-only"  # a known emotion, but not one of the CK+ model's
    (root / "neutral").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "neutral" / "S001_1.png")
    result = CliRunner().invoke(main, ["cross-eval", "--model", str(artifact.id), "--dataset", str(root)])
    assert result.exit_code == 1
    assert "no class of the dataset ['neutral']" in result.output


def test_a_model_refused_by_safe_mode_is_one_line(rt, synthetic_small, tmp_path):
    """A .keras file with a Lambda layer (arbitrary code) is refused by Keras safe mode; the user
    sees that refusal and the file, not a Keras traceback."""
    import keras

    from ferqueue.db import ledger
    from ferqueue.files import fingerprint_file

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(7, activation="softmax")(
        keras.layers.Lambda(lambda x: x * 1.0)(keras.layers.GlobalAveragePooling2D()(inputs)))
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    artifact = ledger.register_artifact(rt.db, architecture="tiny_cnn", path=str(path), sha256=fingerprint_file(path),
                                        num_params=1, image_size=32, class_names=list(synthetic_small.class_names),
                                        weights="random", size_bytes=path.stat().st_size)
    result = CliRunner().invoke(main, ["cross-eval", "--model", str(artifact.id), "--dataset", "synthetic:70",
                                       "--eps", ""])
    assert result.exit_code == 1 and "Traceback" not in result.output
    last = result.output.strip().splitlines()[-1]
    assert "safe mode" in last and str(path) in last, result.output
