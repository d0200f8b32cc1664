"""The EDL ensemble goes through the whole paper pipeline (tiny sizes, random weights)."""

import numpy as np
import pytest
from fq_helpers import register_tiny

from ferqueue import jobs
from ferqueue.db import ledger
from ferqueue.db.queries import results, training_runs
from ferqueue.plans import PaperPlan


def test_gradients_reach_every_edl_branch_and_it_is_attackable():
    """The default run's EDL check: the loss moves every backbone's first weights once the
    backbones are unfrozen, and an attack through the whole ensemble stays in its epsilon ball."""
    import tensorflow as tf

    from ferqueue.attacks import FGSM
    from ferqueue.data import load_dataset
    from ferqueue.models import build_model, set_backbone_trainable

    data = load_dataset("synthetic:16", 32)
    built = build_model("edl", 7, 32, weights="random", seed=0)
    set_backbone_trainable(built.model, True)
    firsts = {name: built.model.get_layer(f"backbone_{name}").trainable_weights[0]
              for name in ("densenet121", "mobilenetv2", "vgg19")}
    with tf.GradientTape() as tape:
        probs = built.model(data.images, training=False)
        loss = tf.reduce_mean(tf.keras.losses.sparse_categorical_crossentropy(data.labels, probs))
    grads = tape.gradient(loss, [w.value for w in firsts.values()])
    for name, grad in zip(firsts, grads, strict=True):
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, f"no gradient reaches {name}"
    set_backbone_trainable(built.model, False)
    attacked = FGSM(0.03)(built.model, data.images[:4], data.labels[:4])
    assert attacked.linf.max() == pytest.approx(0.03, abs=1e-6)


@pytest.mark.slow  # about a minute on 2 cores (three backbones traced for a probe and a fine-tune)
def test_edl_trains_every_branch():
    from ferqueue.data import load_dataset
    from ferqueue.models import build_model
    from ferqueue.train import TrainConfig, train_model

    data = load_dataset("synthetic:16", 32)
    built = build_model("edl", 7, 32, weights="random", seed=0)
    before = [np.array(w) for w in built.model.get_layer("backbone_vgg19").weights[:1]]
    result = train_model(built.model, data.images, data.labels,
                         TrainConfig(epochs=1, probe_epochs=1, batch_size=16, augment=False))
    assert result.gradient_evals == 16
    assert not np.array_equal(before[0], np.array(built.model.get_layer("backbone_vgg19").weights[0])), \
        "the VGG19 branch was fine-tuned"


@pytest.mark.slow  # about 9 minutes on 2 cores: DenseNet121 and VGG19 graphs are traced many times
def test_edl_runs_the_four_scenarios(rt):
    from ferqueue.data import load_dataset

    data = load_dataset("synthetic:70", 32)
    ds_row, split_row, _split, _ = register_tiny(rt, data)
    plan = PaperPlan(models=["edl"], dataset_id=ds_row.id, split_id=split_row.id,
                     train={"epochs": 1, "probe_epochs": 1, "batch_size": 16}, adv_train={"epochs": 1, "probe_epochs": 1},
                     weights="random", eval_attacks=["fgsm:eps=0.02"], store_attacks=["fgsm:eps=0.01"],
                     eval_limit=6)
    pipeline = jobs.plan(rt, jobs.PipelineSpec(steps=plan.steps()))
    jobs.LocalExecutor(rt).run(pipeline.id)
    assert ledger.job(rt.db, pipeline.id).status == "done"
    runs = training_runs(rt.db)
    assert [r["mode"] for r in runs] == ["standard", "offline_adv"]
    assert all(r["num_params"] == 29_681_351 for r in runs)
    assert len(results(rt.db)) == 4
