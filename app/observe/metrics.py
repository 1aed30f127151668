"""Prometheus metrics, with the official prometheus-client, in its default registry (one process,
one gateway): `GET /metrics` (app/api/metrics.py) exposes them.

Labels are few and bounded (model, provider, api, operation, outcome, verdict, route template):
never a task id, a key or a raw path. Counts of what happened are kept by the code that made it
happen, once it is committed; gauges of the shared database's backlogs are read by one query at
scrape time, cached for BACKLOG_TTL_S, so any number of replicas and scrapes cost the database
next to nothing.

Upstream calls per finished task, as an operator computes it:
    sum(rate(imagehook_upstream_calls_total{operation=~"create|query"}[1h]))
      / sum(rate(imagehook_tasks_finished_total[1h]))
The lost-callback rate: imagehook_tasks_finished_by_sweeper_total / imagehook_tasks_finished_total.
"""

from __future__ import annotations

import functools
from typing import Any

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

BACKLOG_TTL_S = 5.0


@functools.cache
def labelled(metric: MetricWrapperBase, *values: str) -> Any:
    """metric.labels(*values), looked up once per label set: labels() takes a lock and builds its
    key on every call, and some of these are counted several times per callback. Label sets are
    few and bounded (see above), so this cache is too."""
    return metric.labels(*values)


TASKS_SUBMITTED = Counter(
    "imagehook_tasks_submitted_total",
    "Submissions, by model and outcome (accepted, rejected_input, rejected_upstream, limited, unavailable).",
    ["model", "outcome"],
)
TASKS_FINISHED = Counter(
    "imagehook_tasks_finished_total", "Tasks that reached a terminal state, by model and state.", ["model", "state"]
)
TASKS_FINISHED_BY_SWEEPER = Counter(
    "imagehook_tasks_finished_by_sweeper_total",
    "Tasks the sweeper finished by asking the provider, because their callback never came.",
    ["model"],
)
TASK_DURATION = Histogram(
    "imagehook_task_duration_seconds",
    "From submission to the terminal state's commit, by model.",
    ["model"],
    buckets=(1, 2.5, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600, 900, 1800),
)
CALLBACK_DELAY = Histogram(
    "imagehook_callback_delay_seconds",
    "From the provider's completion time to the commit of its callback, by model.",
    ["model"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
UPSTREAM_CALLS = Counter(
    "imagehook_upstream_calls_total",
    "Calls to providers, by provider, operation (create, query, upload, balance, result) and outcome "
    "(ok, transient, rejected, timeout).",
    ["provider", "operation", "outcome"],
)
CALLBACKS = Counter(
    "imagehook_callbacks_total",
    "Provider callbacks, by the API they came for and their verdict (applied, duplicate, conflict, rejected:...).",
    ["api", "verdict"],
)
STATUS_READS = Counter(
    "imagehook_status_reads_total", "Status reads, by outcome (cache_hit, cache_miss, not_found).", ["outcome"]
)
CACHE_HITS, CACHE_MISSES, NOT_FOUND = (STATUS_READS.labels(o) for o in ("cache_hit", "cache_miss", "not_found"))
LONG_POLLS = Gauge("imagehook_long_polls", "Status reads waiting (wait=N) in this process now.")
EVENT_STREAMS = Gauge("imagehook_event_streams", "Server-sent event streams open in this process now.")
WEBHOOK_DELIVERIES = Counter(
    "imagehook_webhook_deliveries_total", "Webhook delivery attempts, by outcome.", ["outcome"]
)
RESULT_COPIES = Counter("imagehook_result_copies_total", "Result copy attempts, by outcome.", ["outcome"])
BACKLOG = Gauge(
    "imagehook_backlog",
    "Rows waiting in the shared database, by queue (webhooks_due, copies_due, create_slot).",
    ["queue"],
)
REQUEST_DURATION = Histogram(
    "imagehook_http_request_duration_seconds",
    "HTTP requests, by route template, method and status.",
    ["route", "method", "status"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
