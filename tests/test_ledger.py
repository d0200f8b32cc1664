"""State transitions are conditional: redeliveries are no-ops and only one caller merges."""

import threading

import pytest

from ferqueue.db import ledger
from ferqueue.db.session import open_database
from ferqueue.errors import Conflict


def _plan(db, n_shards=3):
    plans = [{"index": i, "attack_key": "fgsm-eps0.01", "attack_spec": "fgsm:eps=0.01", "start": i * 4,
              "stop": i * 4 + 4} for i in range(n_shards)]
    job = ledger.create_job(db, "generate", {"attacks": ["fgsm:eps=0.01"]}, shards=plans)
    return job, ledger.shards(db, job.id)


def _info(tmp_path, i, seconds=1.0):
    return {"path": str(tmp_path / f"s{i}.h5"), "sha256": f"{i:064d}", "size_bytes": 10, "n_examples": 4,
            "n_success": 1, "queries": 4, "seconds": seconds}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request, settings):
    if request.param == "postgres":
        url = request.getfixturevalue("pg_settings").database_url
    else:
        url = settings.database_url
    return open_database(url)


def test_shard_lifecycle_and_redelivery(db, tmp_path):
    job, shards = _plan(db, 1)
    shard = ledger.begin_shard(db, shards[0].id, "w1")
    assert shard.status == "running" and shard.attempts == 1 and shard.worker == "w1"
    assert ledger.job(db, job.id).status == "running"
    assert ledger.complete_shard(db, shard.id, **_info(tmp_path, 0, 1.5))
    assert ledger.begin_shard(db, shard.id, "w2") is None, "a finished shard is not started again"
    assert not ledger.complete_shard(db, shard.id, **_info(tmp_path, 9)), "the first completion stands"
    row = ledger.shard(db, shard.id)
    assert row.sha256 == f"{0:064d}" and row.worker == "w1" and row.attempts == 1


def test_a_crashed_attempt_is_retried_with_a_new_attempt_count(db, tmp_path):
    _job, shards = _plan(db, 1)
    ledger.begin_shard(db, shards[0].id, "w1")  # worker dies here
    again = ledger.begin_shard(db, shards[0].id, "w2")
    assert again.attempts == 2 and again.worker == "w2"
    ledger.fail_shard(db, again.id, "boom")
    third = ledger.begin_shard(db, again.id, "w3")
    assert third.attempts == 3 and third.error is None


def test_finish_is_claimed_only_when_all_shards_are_done(db, tmp_path):
    job, shards = _plan(db, 2)
    for s in shards:
        ledger.begin_shard(db, s.id, "w")
    ledger.complete_shard(db, shards[0].id, **_info(tmp_path, 0))
    assert not ledger.claim_finish(db, job.id)
    ledger.complete_shard(db, shards[1].id, **_info(tmp_path, 1))
    assert ledger.claim_finish(db, job.id)
    assert not ledger.claim_finish(db, job.id)


def test_concurrent_merge_claims_have_exactly_one_winner(db, tmp_path):
    job, shards = _plan(db, 4)
    for s in shards:
        ledger.begin_shard(db, s.id, "w")
        ledger.complete_shard(db, s.id, **_info(tmp_path, s.index))
    barrier = threading.Barrier(8)
    wins = []

    def claim():
        barrier.wait()
        wins.append(ledger.claim_finish(db, job.id))

    threads = [threading.Thread(target=claim) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]


def test_last_shards_finishing_together_still_merge_once(db, tmp_path):
    """Every shard completes and then tries to claim, all at once: exactly one claim wins."""
    job, shards = _plan(db, 6)
    for s in shards:
        ledger.begin_shard(db, s.id, "w")
    barrier = threading.Barrier(len(shards))
    wins = []

    def finish(shard):
        barrier.wait()
        ledger.complete_shard(db, shard.id, **_info(tmp_path, shard.index))
        wins.append(ledger.claim_finish(db, job.id))

    threads = [threading.Thread(target=finish, args=(s,)) for s in shards]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 1


def test_cancel_reaches_children_and_shards(db):
    parent = ledger.create_job(db, "pipeline", {"steps": []})
    child = ledger.create_job(db, "generate", {}, parent_id=parent.id, step="gen",
                              shards=[{"index": 0, "attack_key": "k", "attack_spec": "fgsm:eps=0.01", "start": 0,
                                       "stop": 1}])
    assert ledger.cancel_job(db, parent.id) >= 3
    assert ledger.job(db, child.id).status == "cancelled"
    assert ledger.shards(db, child.id)[0].status == "cancelled"
    assert ledger.begin_shard(db, ledger.shards(db, child.id)[0].id, "w") is None
    ledger.reopen_job(db, child.id)
    assert ledger.job(db, child.id).status == "pending"
    assert ledger.shards(db, child.id)[0].status == "pending"


def test_a_step_is_created_once_per_pipeline(db):
    parent = ledger.create_job(db, "pipeline", {"steps": []})
    ledger.create_job(db, "train", {}, parent_id=parent.id, step="train-a")
    with pytest.raises(Conflict):
        ledger.create_job(db, "train", {}, parent_id=parent.id, step="train-a")
