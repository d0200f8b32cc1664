"""One thin task per unit of work: ids in, one library call, the outcome recorded by it.

The task names, their queues, their retry policy and what a unit does all come from the
library (``ferqueue.queue``); a new job kind needs nothing here.
"""

from __future__ import annotations

from ferqueue.queue import run_task, task_names, task_options
from workers.celery_app import app, runtime


def shard(job_id: int, shard_id: int) -> dict:
    return run_task(runtime(), app, job_id, shard_id)


def finish(job_id: int) -> dict:
    return run_task(runtime(), app, job_id)


TASKS = {name: app.task(name=name, **task_options())(shard if is_shard else finish)
         for name, is_shard in task_names().items()}
