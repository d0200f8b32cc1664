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


def _info(tmp_path, i, seconds=1.0, owner="w"):
    return {"owner": owner, "path": str(tmp_path / f"s{i}.h5"), "sha256": f"{i:064d}", "size_bytes": 10,
            "n_examples": 4, "n_success": 1, "queries": 4, "seconds": seconds}


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
    assert ledger.complete_shard(db, shard.id, **_info(tmp_path, 0, 1.5, owner="w1"))
    assert ledger.begin_shard(db, shard.id, "w2") is None, "a finished shard is not started again"
    assert not ledger.complete_shard(db, shard.id, **_info(tmp_path, 9, owner="w1")), "the first completion stands"
    row = ledger.shard(db, shard.id)
    assert row.sha256 == f"{0:064d}" and row.worker == "w1" and row.attempts == 1


def test_a_crashed_attempt_is_retried_with_a_new_attempt_count(db, tmp_path):
    _job, shards = _plan(db, 1)
    ledger.begin_shard(db, shards[0].id, "w1")  # worker dies here
    assert ledger.begin_shard(db, shards[0].id, "w2") is None, "a live lease is not taken"
    again = ledger.begin_shard(db, shards[0].id, "w2", take_from="w1")  # w1 is known dead
    assert again.attempts == 2 and again.worker == "w2" and again.lease_owner == "w2"
    ledger.fail_shard(db, again.id, "boom")
    third = ledger.begin_shard(db, again.id, "w3")
    assert third.attempts == 3 and third.error == "boom", "the last error is kept until the shard is done"
    assert ledger.complete_shard(db, third.id, **_info(tmp_path, 0, owner="w3"))
    assert ledger.shard(db, third.id).error is None and ledger.shard(db, third.id).lease_owner is None


def _expire(db, table, row_id):
    """Move a lease's expiry into the past, as time passing with no renewal would."""
    from datetime import timedelta

    from sqlalchemy import update

    with db.session() as s:
        s.execute(update(table).where(table.id == row_id).values(lease_expires_at=ledger.now() - timedelta(seconds=1)))


def test_a_late_finisher_whose_lease_was_taken_over_records_nothing(db, tmp_path):
    from ferqueue.db.tables import ShardRow

    _job, shards = _plan(db, 1)
    first = ledger.begin_shard(db, shards[0].id, "w1", 60)
    assert ledger.renew_lease(db, "shard", first.id, "w1", 60)
    _expire(db, ShardRow, first.id)
    assert [s.id for s, _kind in ledger.expired_shards(db)] == [first.id]
    assert ledger.reclaim_shard(db, first.id, "lost", 60) and not ledger.reclaim_shard(db, first.id, "lost", 60), \
        "one supervisor reclaims it"
    assert ledger.shard(db, first.id).status == "pending" and not ledger.expired_shards(db)
    assert not ledger.renew_lease(db, "shard", first.id, "w1", 60), "the late holder cannot renew"
    second = ledger.begin_shard(db, first.id, "w2", 60)
    assert second.attempts == 2 and second.error == "lost"
    assert not ledger.complete_shard(db, first.id, **_info(tmp_path, 1, owner="w1")), "nor record"
    assert ledger.complete_shard(db, first.id, **_info(tmp_path, 2, owner="w2"))
    assert ledger.shard(db, first.id).sha256 == f"{2:064d}"


def test_a_released_shard_must_restart_in_time_and_attempts_are_bounded(db):
    from ferqueue.db.tables import ShardRow

    _job, shards = _plan(db, 1)
    shard = ledger.begin_shard(db, shards[0].id, "w1", 60, max_attempts=2)
    assert ledger.release_shard(db, shard.id, "w1", "OperationalError: gone", restart_within=60)
    released = ledger.shard(db, shard.id)
    assert released.status == "pending" and released.lease_owner is None and released.lease_expires_at > ledger.now()
    again = ledger.begin_shard(db, shard.id, "w2", 60, max_attempts=2)
    assert again.attempts == 2
    _expire(db, ShardRow, shard.id)
    assert ledger.begin_shard(db, shard.id, "w3", 60, max_attempts=2) is None, "no attempt left"
    assert ledger.give_up_shard(db, shard.id, 2, "lost") and not ledger.give_up_shard(db, shard.id, 2, "lost")
    assert ledger.shard(db, shard.id).status == "failed"


def test_a_finishing_unit_is_leased_once(db, tmp_path):
    from ferqueue.db.tables import JobRow

    job, shards = _plan(db, 1)
    ledger.begin_shard(db, shards[0].id, "w")
    ledger.complete_shard(db, shards[0].id, **_info(tmp_path, 0))
    assert ledger.claim_finish(db, job.id, start_within=60)
    claimed = ledger.job(db, job.id)
    assert claimed.status == "merging" and claimed.lease_owner is None and claimed.lease_expires_at > ledger.now()
    first = ledger.begin_finish(db, job.id, "m1", 60, from_states=("merging",))
    assert first.attempts == 1 and first.lease_owner == "m1"
    assert ledger.begin_finish(db, job.id, "m2", 60, from_states=("merging",)) is None, "a duplicate waits"
    _expire(db, JobRow, job.id)
    assert [j.id for j in ledger.expired_jobs(db)] == [job.id]
    assert ledger.reclaim_job(db, job.id, "lost", 60)
    second = ledger.begin_finish(db, job.id, "m2", 60, from_states=("merging",))
    assert second.attempts == 2
    assert not ledger.finish_job(db, job.id, {"n": 1}, from_states=("merging",), owner="m1"), "the late merge"
    assert ledger.finish_job(db, job.id, {"n": 2}, from_states=("merging",), owner="m2")
    done = ledger.job(db, job.id)
    assert done.status == "done" and done.result == {"n": 2} and done.lease_owner is None


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
