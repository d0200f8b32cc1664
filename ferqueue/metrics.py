"""ferqueue's own counts in Prometheus's text format: jobs and shards by state, shard attempts.

Flower's ``/metrics`` counts Celery's events (tasks received, succeeded, failed, per worker);
these count what the ledger says of jobs and shards, whichever worker or executor ran them.
``ferqueue metrics --out FILE.prom`` writes them atomically for node_exporter's textfile
collector, so no new server, port or credential is needed: run it every minute (cron, a
systemd timer, a compose service looping over it).
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ferqueue.files import write_atomically
from ferqueue.jobs import registered
from ferqueue.vocabulary import JOB_STATES, SHARD_STATES


class _LedgerCounts:
    """A Prometheus collector over one reading of ``ferqueue.db.queries.ledger_counts``."""

    def __init__(self, counts: dict):
        self.counts = counts

    def collect(self):
        # every kind x state has a series (0 when there is none), so alerts and rates always
        # find one; a kind only the ledger knows (an older version's) is kept too
        kinds = sorted(set(registered()) | {r["kind"] for r in self.counts["jobs"]})
        jobs = GaugeMetricFamily("ferqueue_jobs", "Jobs in the ledger, by kind and status.", labels=["kind", "status"])
        _fill(jobs, kinds, JOB_STATES, self.counts["jobs"], "count")
        shards = GaugeMetricFamily("ferqueue_shards", "Shards in the ledger, by their job's kind and status.",
                                   labels=["kind", "status"])
        sharded = sorted({k for k, kind in registered().items() if kind.sharded}
                         | {r["kind"] for r in self.counts["shards"]})
        _fill(shards, sharded, SHARD_STATES, self.counts["shards"], "count")
        attempts = CounterMetricFamily("ferqueue_shard_attempts", "Times shards were started (a retried or "
                                       "redelivered shard counts each time), by their job's kind.", labels=["kind"])
        for kind in sharded:
            attempts.add_metric([kind], sum(r["attempts"] for r in self.counts["shards"] if r["kind"] == kind))
        active = GaugeMetricFamily("ferqueue_active_job_shards", "Shards of each unfinished job, by status.",
                                   labels=["job_id", "kind", "status"])
        for r in self.counts["active_job_shards"]:
            active.add_metric([str(r["job_id"]), r["kind"], r["status"]], r["count"])
        return [jobs, shards, attempts, active]


def _fill(family: GaugeMetricFamily, kinds: list[str], states: tuple[str, ...], rows: list[dict], field: str) -> None:
    seen = {(r["kind"], r["status"]): r[field] for r in rows}
    for kind in kinds:
        for status in states:
            family.add_metric([kind, status], seen.get((kind, status), 0))


def exposition(counts: dict) -> str:
    """The counts in Prometheus's text exposition format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LedgerCounts(counts))
    return generate_latest(registry).decode()


def write_textfile(path: Path, text: str) -> Path:
    """Replace ``path`` atomically: node_exporter never reads half a file (it skips the
    temporary one, whose name does not end in .prom)."""
    path = Path(path)
    final, _sha = write_atomically(path.parent, lambda tmp: tmp.write_text(text), lambda _sha: path.name)
    return final
