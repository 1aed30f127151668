"""The measurements, each a few rows of the table. All run against one gateway process per backend,
whose database grows as the suite goes: small scale point, reads and callbacks, end to end, large
scale point. One process throughout, so its peak memory covers everything."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from statistics import median
from types import SimpleNamespace

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.engine import create_engine
from app.providers.catalogue import MARKET
from app.providers.kie import signature as kie_signature
from app.settings import Settings
from app.tasks.submit import callback_url
from bench import e2e, seed, servers, sweep, wrk
from bench.profile import profiled
from bench.report import Row, compared, ms
from bench.servers import Server

WARM_UP_CAP_S = 300  # reading each of 10,000 tasks once takes seconds; this only bounds a server gone wrong
CALLBACK_TARGETS = {"sqlite": "≥ 0.30", "postgres": "≥ 0.25"}


@dataclass(frozen=True)
class Plan:
    small: int  # tasks at the first scale point
    main: int  # tasks during reads and callbacks
    large: int  # tasks at the last scale point
    hot_set: int  # hot reads spread over this many tasks
    e2e_tasks: int
    e2e_rate: float
    runs: int
    duration_s: float
    warmup_s: float
    sweep_rounds: int
    seed_budget_s: float  # seeding the large scale point stops here; the row says so


@dataclass
class Ctx:
    backend: str
    plan: Plan
    workdir: Path
    emulator: Server
    bare: Server
    url: str
    engine: AsyncEngine
    key: str
    key_id: int
    gateway: Server | None = None
    seeding: list[str] = field(default_factory=list)  # how the current size was reached, for the notes
    read: set[str] = field(default_factory=set)  # every task read so far: cold reads pick others
    pg_url: str = ""  # the PostgreSQL database beside which bench databases are made
    only: set[str] = field(default_factory=set)  # the kinds of scenario to run (bench --only)
    profile: Path | None = None  # where py-spy summaries go (bench --profile)

    @property
    def gateway_pid(self) -> int | None:
        return self.gateway.process.pid if self.gateway and self.gateway.process else None

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def grow(ctx: Ctx, total: int, live_share: float) -> None:
    """Seed tasks until the table holds `total` (or the seeding budget runs out)."""
    missing = total - await seed.count_tasks(ctx.engine)
    if missing <= 0:
        return
    log(f"{ctx.backend}: seeding {missing:,} tasks ({live_share:.0%} in flight)")
    started = time.monotonic()
    added = await seed.add_tasks(ctx.engine, ctx.url, ctx.key_id, missing, live_share, ctx.plan.seed_budget_s)
    took = time.monotonic() - started
    ctx.seeding = [f"seeded {added:,} tasks in {took:.0f} s ({added / took:,.0f}/s)"]
    if added < missing:
        ctx.seeding.append(f"seeding stopped after {ctx.plan.seed_budget_s:.0f} s, {missing - added:,} short")


async def pair(ctx: Ctx, requests: Path, mode: str, duration_s: float) -> tuple[wrk.Result, wrk.Result]:
    """The gateway, then the bare app, with the same requests for the same time."""
    assert ctx.gateway is not None
    gateway = await wrk.run(ctx.gateway.url, requests, mode=mode, duration_s=duration_s, headers=ctx.auth)
    bare = await wrk.run(ctx.bare.url, requests, mode=mode, duration_s=duration_s, headers=ctx.auth)
    return gateway, bare


def status_file(ctx: Ctx, name: str, task_ids: list[str]) -> Path:
    lines = [wrk.request_line("GET", f"/api/images/status?taskId={task_id}") for task_id in task_ids]
    return wrk.write_requests(ctx.workdir / f"{ctx.backend}-{name}.txt", lines)


async def hot_reads(ctx: Ctx, prefix: str = "", profile_as: str = "") -> Row:
    """Status reads drawn uniformly at random from hot_set tasks of the table, after a warm-up;
    if profile_as names it, the gateway is profiled during the measured runs (not the warm-up)."""
    assert ctx.gateway is not None
    hot_ids = await seed.sample_ids(ctx.engine, ctx.plan.hot_set)
    ctx.read.update(hot_ids)
    hot = status_file(ctx, "hot", hot_ids)
    await warm_up(ctx, hot)
    before = await status_reads_by_outcome(ctx)
    with profiled(ctx.gateway_pid, ctx.profile if profile_as else None, profile_as):
        pairs = [await pair(ctx, hot, "random", ctx.plan.duration_s) for _ in range(ctx.plan.runs)]
    after = await status_reads_by_outcome(ctx)
    hits, total = after["cache_hit"] - before["cache_hit"], sum(after.values()) - sum(before.values())
    cached = f"{hits / max(total, 1):.1%} answered from the cache"
    notes = [f"uniform over {len(hot_ids):,} tasks", cached, *ctx.seeding]
    scenario = f"{prefix}status reads, hot ({await seed.count_tasks(ctx.engine):,} tasks)"
    return compared(ctx.backend, scenario, pairs, notes=notes, target="" if prefix else "≥ 0.85")


async def warm_up(ctx: Ctx, requests: Path) -> None:
    """Read every task of the file once, however long that takes, then at random as the measurement
    will: a random warm-up alone leaves some of the set unread, and those first reads, database
    queries, would be counted as hot ones."""
    assert ctx.gateway is not None
    await wrk.run(ctx.gateway.url, requests, mode="once", duration_s=WARM_UP_CAP_S, headers=ctx.auth)
    await wrk.run(ctx.gateway.url, requests, mode="random", duration_s=ctx.plan.warmup_s, headers=ctx.auth)


async def status_reads_by_outcome(ctx: Ctx) -> Counter[str]:
    """The gateway's own count of status reads so far, by outcome (cache_hit, cache_miss, not_found)."""
    assert ctx.gateway is not None
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{ctx.gateway.url}/metrics")).text
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "imagehook_status_reads_total":
                counts[sample.labels["outcome"]] += int(sample.value)
    return counts


async def status_reads(ctx: Ctx) -> list[Row]:
    """Hot reads, then cold ones: every read a task nobody read before in this suite."""
    hot_row = await hot_reads(ctx)
    cold_ids = [task_id for task_id in await seed.all_ids(ctx.engine) if task_id not in ctx.read]
    share = len(cold_ids) // ctx.plan.runs  # disjoint per run, so no run reads what an earlier one did
    hot_rps = median(g["rps"] for g in hot_row.data["imagehook"])
    # Short enough that the run's share is not used up even if cold reads were a quarter faster than hot.
    duration = min(ctx.plan.duration_s, max(1.0, share / (1.25 * hot_rps)))
    pairs, repeats = [], 0
    for run in range(ctx.plan.runs):
        cold = status_file(ctx, "cold", cold_ids[run * share : (run + 1) * share])
        pairs.append(await pair(ctx, cold, "sequential", duration))
        repeats += max(0, pairs[-1][0].requests - share)
    notes = [f"{share:,} tasks per run, none of them read before", f"{round(duration)} s runs"]
    notes.append(f"{repeats:,} reads repeated a task" if repeats else "no task read twice")
    scenario = f"status reads, cold ({await seed.count_tasks(ctx.engine):,} tasks)"
    return [hot_row, compared(ctx.backend, scenario, pairs, notes=notes, target="≥ 0.30")]


def callback_file(ctx: Ctx, pool: list[tuple[str, str]]) -> Path:
    """Signed Kie market callbacks, one per in-flight task, at the URLs the gateway gave Kie.

    Signatures carry a timestamp the gateway accepts for ±300 s, so the file is written just
    before each run."""
    assert ctx.gateway is not None
    settings = Settings.from_environ(ctx.gateway.env)
    # callback_url reads only the settings of its deps.
    deps = SimpleNamespace(settings=settings)
    timestamp, now_ms = str(int(time.time())), int(time.time() * 1000)
    lines = []
    for task_id, upstream_id in pool:
        path = httpx.URL(callback_url(deps, task_id, MARKET)).raw_path.decode()  # type: ignore[arg-type]
        data = {
            "taskId": upstream_id,
            "model": "nano-banana-pro",
            "state": "success",
            "param": json.dumps({"model": "nano-banana-pro", "input": {"prompt": "bench"}}),
            "resultJson": json.dumps({"resultUrls": [f"{seed.RESULT_HOST}/{upstream_id}/0.png"]}),
            "failCode": "",
            "failMsg": "",
            "costTime": 31,
            "createTime": now_ms - 31_000,
            "updateTime": now_ms,
            "completeTime": now_ms,
            "creditsConsumed": 18,
        }
        body = json.dumps({"code": 200, "msg": "Playground task completed successfully.", "data": data})
        headers = {
            "Content-Type": "application/json",
            kie_signature.TIMESTAMP_HEADER: timestamp,
            kie_signature.SIGNATURE_HEADER: kie_signature.sign(servers.HMAC_KEY, upstream_id, timestamp),
        }
        lines.append(wrk.request_line("POST", path, body, headers))
    return wrk.write_requests(ctx.workdir / f"{ctx.backend}-callbacks.txt", lines)


async def callbacks(ctx: Ctx) -> list[Row]:
    """Each callback for a different in-flight task; every run starts from the same tasks back in flight."""
    assert ctx.gateway is not None
    pool = await seed.live_pool(ctx.engine)
    warmup = callback_file(ctx, pool)
    await wrk.run(ctx.gateway.url, warmup, mode="sequential", duration_s=ctx.plan.warmup_s)
    pairs, finished, answered, repeats, cpu_s = [], 0, 0, 0, 0.0
    for _ in range(ctx.plan.runs):
        await seed.reset_live_pool(ctx.engine)
        requests = callback_file(ctx, pool)
        cpu_before = ctx.gateway.cpu_s()
        gateway = await wrk.run(ctx.gateway.url, requests, mode="sequential", duration_s=ctx.plan.duration_s)
        cpu_s += ctx.gateway.cpu_s() - cpu_before
        finished += await seed.count_live_finished(ctx.engine)
        answered += gateway.requests - gateway.non_2xx
        repeats += max(0, gateway.requests - len(pool))
        # Also stops the copier working through this run's results while the bare app is measured.
        await seed.reset_live_pool(ctx.engine)
        bare = await wrk.run(ctx.bare.url, requests, mode="sequential", duration_s=ctx.plan.duration_s)
        pairs.append((gateway, bare))
    notes = [
        f"{finished:,} tasks terminal in the DB after {answered:,} callbacks answered 2xx "
        "(wrk does not count answers still in flight when it stops)",
        f"pool of {len(pool):,} in-flight tasks",
        f"gateway CPU {cpu_s * 1000 / max(answered, 1):.2f} ms per callback (all threads)",
        f"{repeats:,} callbacks repeated a task" if repeats else "no task called back twice",
        "signed (X-Webhook-*); result copies fail fast (host not allowed)",
    ]
    target = CALLBACK_TARGETS[ctx.backend]
    row = compared(ctx.backend, "callbacks (signed, distinct tasks)", pairs, unit="cb/s", notes=notes, target=target)
    row.data |= {"terminal_in_db": finished, "answered_2xx": answered}
    return [row]


async def end_to_end(ctx: Ctx) -> list[Row]:
    assert ctx.gateway is not None
    plan, generate_s = ctx.plan, 2.0
    log(f"{ctx.backend}: end to end, {plan.e2e_tasks:,} tasks at {plan.e2e_rate:g}/s")
    report = await e2e.run(
        ctx.gateway.url,
        ctx.emulator.url,
        ctx.key,
        tasks=plan.e2e_tasks,
        rate=plan.e2e_rate,
        generate_s=generate_s,
        drop=0.02,
        duplicate=0.01,
        finish_within_s=60,
    )
    lost = report.tasks - report.finished
    notes = [
        f"generate_s {generate_s:g} s, 2% callbacks dropped ({report.dropped}), 1% duplicated ({report.duplicated})",
        f"dropped ones seen after p50 {ms(e2e.percentile(report.dropped_latency_ms, 50))} "
        f"(sweeper, STALE_AFTER_S={servers.STALE_AFTER_S})",
        f"generate answered in p50 {ms(e2e.percentile(report.submit_ms, 50))}, "
        f"p99 {ms(e2e.percentile(report.submit_ms, 99))}",
        "latency: upstream completion (job created + generate_s) to a long-polling client seeing it",
    ]
    if lost:
        notes.append(f"{lost} never seen finished: {'; '.join(sorted(set(report.errors))[:3])}")
    flow = Row(
        ctx.backend,
        f"end to end: {report.tasks:,} tasks at {report.rate:g}/s",
        f"{report.correct:,}/{report.tasks:,} right terminal state",
        p50=ms(e2e.percentile(report.latency_ms, 50)),
        p99=ms(e2e.percentile(report.latency_ms, 99)),
        target="all success",
        notes="; ".join(notes),
        data=vars(report) | {"lost": lost},
    )
    calls = Row(
        ctx.backend,
        "end to end: upstream calls per task",
        f"{report.calls_per_task:.3f}",
        target="≤ 1.03",
        notes=f"createTask {report.creates:,} + recordInfo {report.queries:,} over {report.tasks:,} tasks",
        data={"calls_per_task": report.calls_per_task},
    )
    return [flow, calls]


async def scale_point(ctx: Ctx) -> list[Row]:
    assert ctx.gateway is not None
    count = await seed.count_tasks(ctx.engine)
    rows = [await hot_reads(ctx, "scale: ")]
    log(f"{ctx.backend}: sweeper rounds at {count:,} tasks")
    round_ms, claim_ms, done = await sweep.time_rounds(
        ctx.gateway.env, ctx.engine, ctx.key_id, ctx.emulator.url, ctx.plan.sweep_rounds
    )
    expected = sweep.BATCH_SIZE * ctx.plan.sweep_rounds
    notes = [f"claim query alone: p50 {ms(median(claim_ms))}", f"{len(round_ms)} rounds"]
    if done["checked"] != expected:
        notes.append(f"expected {expected} checks, rounds did {dict(done)}")
    rows.append(
        Row(
            ctx.backend,
            f"scale: sweeper round, {sweep.BATCH_SIZE} due ({count:,} tasks)",
            f"{median(round_ms):,.1f} ms/round",
            p50=ms(median(round_ms)),
            p99=ms(max(round_ms)) + " (max)",
            notes="; ".join(notes),
            data={"round_ms": round_ms, "claim_ms": claim_ms, "done": dict(done)},
        )
    )
    return rows


def memory(ctx: Ctx) -> Row:
    assert ctx.gateway is not None
    peak = ctx.gateway.peak_rss_mb()
    return Row(
        ctx.backend,
        "gateway peak RSS (VmHWM), whole suite",
        "n/a" if peak is None else f"{peak:,.0f} MB",
        target="< 300 MB",
        notes="one gateway process served every scenario above",
        data={"peak_rss_mb": peak},
    )


async def queued_reads(ctx: Ctx) -> list[Row]:
    """Hot reads while `e2e_tasks` submissions wait behind Kie's create window (20 per 10 s, the
    default), on a database and gateway of their own: the main gateway sends unthrottled."""
    url = await seed.create_database(ctx.backend, ctx.workdir, ctx.pg_url)
    engine = create_engine(url)
    queue_ctx: Ctx | None = None
    try:
        servers.migrate(url)
        key, key_id = await seed.create_key(engine)
        await seed.add_tasks(engine, url, key_id, ctx.plan.hot_set, live_share=0.0, budget_s=ctx.plan.seed_budget_s)
        env = servers.gateway_env(url, ctx.emulator.url, ctx.workdir) | {"KIE_CREATE_LIMIT": "20"}
        gateway = servers.start_gateway(ctx.workdir, env)
        queue_ctx = replace(
            ctx, url=url, engine=engine, key=key, key_id=key_id, gateway=gateway, read=set(), seeding=[]
        )
        await submit_many(queue_ctx, ctx.plan.e2e_tasks)
        row = await hot_reads(queue_ctx, profile_as=f"{ctx.backend} queued gateway, hot reads")
        row.scenario = f"status reads, hot, {ctx.plan.e2e_tasks:,} tasks queued behind the create window"
        row.notes = f"{await seed.count_unsent(engine):,} of them still unsent after the runs; {row.notes}"
        return [row]
    finally:
        if queue_ctx is not None and queue_ctx.gateway is not None:
            queue_ctx.gateway.stop()
        await engine.dispose()
        await seed.drop_database(url, ctx.pg_url)


async def submit_many(ctx: Ctx, count: int, at_once: int = 32) -> None:
    assert ctx.gateway is not None
    gate = asyncio.Semaphore(at_once)
    async with httpx.AsyncClient(base_url=ctx.gateway.url, headers=ctx.auth, timeout=60) as http:

        async def one(n: int) -> None:
            async with gate:
                response = await http.post("/api/images/generate", json={"prompt": f"queued {n}"})
                response.raise_for_status()

        await asyncio.gather(*(one(n) for n in range(count)))
