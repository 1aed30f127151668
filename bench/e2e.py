"""End to end: tasks submitted at a steady rate through the gateway to the emulator, with lost and
duplicated callbacks, each watched by a long-polling client until it is finished."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from statistics import quantiles
from typing import Any

import httpx

TERMINAL = ("success", "fail")
WAIT_S = 30  # each status read waits this long for a change (the gateway's ?wait=N)


@dataclass
class Watched:
    submitted_at: float = 0.0
    submit_ms: float = 0.0
    state: str | None = None
    visible_at: float | None = None  # wall clock when the client first saw the terminal state
    error: str | None = None


@dataclass
class Report:
    tasks: int
    rate: float
    finished: int
    correct: int  # finished in the state the emulator says the job ended in
    dropped: int
    duplicated: int
    creates: int
    queries: int
    latency_ms: list[float] = field(default_factory=list)  # upstream completion -> visible to the client
    dropped_latency_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def calls_per_task(self) -> float:
        return (self.creates + self.queries) / self.tasks


def percentile(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return quantiles(values, n=100, method="inclusive")[q - 1]


async def run(
    gateway_url: str,
    emulator_url: str,
    key: str,
    *,
    tasks: int,
    rate: float,
    generate_s: float,
    drop: float,
    duplicate: float,
    finish_within_s: float,
) -> Report:
    async with httpx.AsyncClient(base_url=emulator_url) as emulator:
        (await emulator.post("/emulator/reset")).raise_for_status()
        faults = {"generate_s": generate_s, "drop_callbacks": drop, "duplicate_rate": duplicate, "seed": 20261122}
        (await emulator.post("/emulator/faults", json=faults)).raise_for_status()
        watched = await submit_and_watch(gateway_url, key, tasks, rate, finish_within_s)
        jobs = (await emulator.get("/emulator/tasks")).json()
        calls = (await emulator.get("/emulator/calls")).json()
        await emulator.post("/emulator/faults", json={})
    return compare(watched, jobs, calls, tasks, rate, generate_s)


async def submit_and_watch(
    gateway_url: str, key: str, tasks: int, rate: float, finish_within_s: float
) -> dict[str, Watched]:
    """Submit `tasks` at `rate` per second, each followed by a long-polling reader; by gateway task id."""
    watched: dict[str, Watched] = {}
    # Every watcher holds a connection while it waits, so the pool must not queue them.
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=gateway_url, headers=headers, limits=limits, timeout=WAIT_S + 30) as http:
        started = time.monotonic()
        deadline = started + tasks / rate + finish_within_s
        readers = []
        for n in range(tasks):
            await asyncio.sleep(max(0.0, started + n / rate - time.monotonic()))
            readers.append(asyncio.create_task(submit_one(http, n, watched, deadline)))
        await asyncio.gather(*readers)
    return watched


async def submit_one(http: httpx.AsyncClient, n: int, watched: dict[str, Watched], deadline: float) -> None:
    entry = Watched(submitted_at=time.time())
    try:
        response = await http.post("/api/images/generate", json={"prompt": f"bench lighthouse {n}"})
        entry.submit_ms = (time.time() - entry.submitted_at) * 1000
        response.raise_for_status()
        task_id = response.json()["taskId"]
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        watched[f"unsubmitted-{n}"] = Watched(error=f"generate: {exc}")
        return
    watched[task_id] = entry
    while time.monotonic() < deadline:
        try:
            response = await http.get("/api/images/status", params={"taskId": task_id, "wait": WAIT_S})
            response.raise_for_status()
            entry.state = response.json()["state"]
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            entry.error = f"status: {exc}"
            await asyncio.sleep(0.5)
            continue
        if entry.state in TERMINAL:
            entry.visible_at = time.time()
            return


def compare(
    watched: dict[str, Watched],
    jobs: list[dict[str, Any]],
    calls: dict[str, Any],
    tasks: int,
    rate: float,
    gen_s: float,
) -> Report:
    """Check each task against the emulator's record of its job, which tells the true outcome."""
    # The callback URL is /callbacks/kie/{gateway task id}/{token}: it ties each job to its task.
    jobs_by_task = {job["callBackUrl"].rstrip("/").split("/")[-2]: job for job in jobs if job.get("callBackUrl")}
    report = Report(
        tasks=tasks,
        rate=rate,
        finished=0,
        correct=0,
        dropped=sum(job["dropped"] for job in jobs),
        duplicated=sum(len(job["deliveries"]) > 1 for job in jobs),
        creates=calls["createTask"],
        queries=calls["recordInfo"],
    )
    for task_id, entry in watched.items():
        if entry.error and entry.visible_at is None:
            report.errors.append(entry.error)
        if entry.submit_ms:
            report.submit_ms.append(entry.submit_ms)
        job = jobs_by_task.get(task_id)
        if entry.visible_at is None or job is None:
            continue
        report.finished += 1
        report.correct += entry.state == job["state"]
        # The job finished upstream at its creation plus generate_s: the moment Kie would call back.
        latency = (entry.visible_at - (job["createdAt"] + gen_s)) * 1000
        report.latency_ms.append(latency)
        if job["dropped"]:
            report.dropped_latency_ms.append(latency)
    return report
