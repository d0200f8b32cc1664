"""The words ferqueue's records use, defined once: job, shard and run states, training modes,
evaluation settings and the subsets of a split.

The ledger's check constraints, the training loop, the CLI's choices and the report's
ordering all read them from here. Imports nothing.
"""

from __future__ import annotations

# ---- states ---------------------------------------------------------------------------------

PENDING, RUNNING, MERGING, DONE, FAILED, CANCELLED = "pending", "running", "merging", "done", "failed", "cancelled"

# "merging": every shard is done and one caller has claimed the job's finishing step (the
# merge of a generation job); kinds without shards go straight from running to done
JOB_STATES = (PENDING, RUNNING, MERGING, DONE, FAILED, CANCELLED)
ACTIVE_JOB_STATES = (PENDING, RUNNING, MERGING)
FINAL_JOB_STATES = (DONE, FAILED, CANCELLED)
REOPENABLE_JOB_STATES = (FAILED, CANCELLED)

SHARD_STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)
# a shard in one of these may be (re)started; a running one whose worker died is redelivered
STARTABLE_SHARD_STATES = (PENDING, RUNNING, FAILED)

RUN_STATES = (PENDING, RUNNING, DONE, FAILED, CANCELLED)

# ---- training ------------------------------------------------------------------------------------

STANDARD, OFFLINE_ADV, ONLINE_FGSM, ONLINE_FGSM_RS = "standard", "offline_adv", "online_fgsm", "online_fgsm_rs"
N_FGSM, PGD_AT, TRADES = "n_fgsm", "pgd_at", "trades"
# offline adversarial training whose store is regenerated against the current weights every R
# epochs (a chain of training segments and generation jobs)
REFRESH_ADV = "refresh_adv"
# in the order tables and plots show them
TRAINING_MODES = (STANDARD, OFFLINE_ADV, REFRESH_ADV, ONLINE_FGSM, ONLINE_FGSM_RS, N_FGSM, PGD_AT, TRADES)
# modes that train on original + stored examples: they need a finished generation job
STORE_MODES = (OFFLINE_ADV, REFRESH_ADV)
# online modes regenerate their adversarial examples against the current weights every batch:
# FGSM; FGSM from a random start with a step of 1.25 eps (FGSM-RS); N-FGSM (noise of 2 eps, a
# step of eps, no projection); K-step PGD from a random start (PGD-AT); TRADES (clean
# cross-entropy plus beta times the KL divergence to a K-step PGD example of that divergence)
ONLINE_MODES = (ONLINE_FGSM, ONLINE_FGSM_RS, N_FGSM, PGD_AT, TRADES)
# a model evaluated without a training run of its own (an artifact brought from elsewhere)
EXTERNAL = "external"

# ---- evaluation and data ---------------------------------------------------------------------------

CLEAN, WHITEBOX, TRANSFER = "clean", "whitebox", "transfer"
EVAL_SETTINGS = (CLEAN, WHITEBOX, TRANSFER)

SUBSETS = ("train", "test")  # the two sides of a split that jobs read


def mode_rank(mode: str) -> int:
    """Sort key: training modes in their table order, anything else after them."""
    return TRAINING_MODES.index(mode) if mode in TRAINING_MODES else len(TRAINING_MODES)
