"""imagehook's benchmark suite: python -m bench [--quick] [--backend sqlite|postgres|both] [--runs N] [--duration S]

Starts everything itself on 127.0.0.1 (the Kie emulator, a bare Starlette reference app and, per
database backend, a fresh database and the gateway as `python -m app serve`), measures status
reads, callback ingestion, an end-to-end run, scale and memory, and prints one markdown table.
Rates and latencies are medians over the runs; each ratio compares the gateway with the bare app
measured right after it in the same run, so both saw the same machine load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

from app.db.engine import create_engine
from bench import seed, servers, wrk
from bench.profile import profiled
from bench.report import Row, as_dict, table
from bench.scenarios import (
    Ctx,
    Plan,
    callbacks,
    end_to_end,
    grow,
    log,
    memory,
    queued_reads,
    scale_point,
    status_reads,
)

FULL = Plan(
    small=10_000,
    main=100_000,
    large=1_000_000,
    hot_set=10_000,
    e2e_tasks=2_000,
    e2e_rate=20,
    runs=3,
    duration_s=10,
    warmup_s=2,
    sweep_rounds=5,
    seed_budget_s=180,
)
QUICK = Plan(
    small=1_000,
    main=10_000,
    large=20_000,
    hot_set=1_000,
    e2e_tasks=100,
    e2e_rate=25,
    runs=1,
    duration_s=2,
    warmup_s=1,
    sweep_rounds=2,
    seed_budget_s=60,
)
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
SCENARIOS = ("reads", "queued", "callbacks", "e2e", "scale", "memory")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="small sizes, one run, a few seconds per measurement")
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--runs", type=int, help="runs per measurement; the median is reported (default 3)")
    parser.add_argument("--duration", type=float, help="seconds per wrk measurement (default 10)")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("PG_TEST_URL", DEFAULT_PG_URL),
        help="an existing PostgreSQL database to connect to; the bench creates and drops its own beside it",
    )
    parser.add_argument("--json", type=Path, help="also write every row, with its raw numbers, to this file")
    parser.add_argument(
        "--only",
        type=lambda text: set(text.split(",")),
        default=set(SCENARIOS),
        help=f"comma-separated scenarios to measure, of {','.join(SCENARIOS)} (default all); seeds only what they need",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the gateway with py-spy during each scenario; a summary of its top frames goes to this directory",
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    plan = QUICK if args.quick else FULL
    plan = replace(plan, runs=args.runs or plan.runs, duration_s=args.duration or plan.duration_s)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    wrk.ensure_installed()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="imagehook-bench-") as tmp:
        workdir = Path(tmp)
        emulator = servers.start_emulator(workdir)
        bare = None
        try:
            bare = servers.start_bare(workdir)
            for backend in backends:
                try:
                    rows += asyncio.run(bench_backend(backend, plan, workdir, emulator, bare, args))
                except Exception as exc:  # the other backend still runs
                    traceback.print_exc()
                    rows.append(Row(backend, "suite", f"failed: {type(exc).__name__}: {exc}"[:300]))
        finally:
            for server in (bare, emulator):
                if server is not None:
                    server.stop()
    print(
        f"\nimagehook benchmarks: {os.cpu_count()} CPUs; wrk -t{wrk.THREADS} -c{wrk.CONNECTIONS}, "
        f"{plan.duration_s:g} s per measurement, median of {plan.runs} run(s); one uvicorn worker (httptools) "
        "each for the gateway and the bare app\n"
    )
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps([as_dict(row) for row in rows], indent=2, default=str))


async def bench_backend(
    backend: str, plan: Plan, workdir: Path, emulator: servers.Server, bare: servers.Server, args: argparse.Namespace
) -> list[Row]:
    pg_url = args.pg_url
    log(f"{backend}: creating the database")
    try:
        url = await seed.create_database(backend, workdir, pg_url)
    except Exception as exc:  # PostgreSQL not running: say so in the table, and still show SQLite
        return [Row(backend, "database", f"not available: {type(exc).__name__}: {exc}")]
    engine = create_engine(url)
    rows: list[Row] = []
    ctx = None
    try:
        servers.migrate(url)
        key, key_id = await seed.create_key(engine)
        ctx = Ctx(backend, plan, workdir, emulator, bare, url, engine, key, key_id)
        ctx.pg_url, ctx.only, ctx.profile = pg_url, args.only, args.profile
        await grow(ctx, plan.small, live_share=0.5)
        ctx.gateway = servers.start_gateway(workdir, servers.gateway_env(url, emulator.url, workdir))
        # The table grows as the suite goes, so the small scale point comes first; it is listed after the rest.
        small = await attempt(ctx, "scale", "scale, small", scale_point)
        await grow(ctx, plan.main, live_share=0.5)
        rows += await attempt(ctx, "reads", "status reads", status_reads)
        rows += await attempt(ctx, "queued", "status reads while tasks queue", queued_reads)
        rows += await attempt(ctx, "callbacks", "callbacks", callbacks)
        rows += await attempt(ctx, "e2e", "end to end", end_to_end)
        # What a long-running service accumulates: finished tasks (what only these measure at).
        if ctx.only & {"scale", "memory"}:
            await grow(ctx, plan.large, live_share=0.0)
        rows += small + await attempt(ctx, "scale", "scale, large", scale_point)
        if "memory" in ctx.only:
            rows.append(memory(ctx))
    finally:
        if ctx is not None and ctx.gateway is not None:
            ctx.gateway.stop()
        await engine.dispose()
        await seed.drop_database(url, pg_url)
    return rows


async def attempt(ctx: Ctx, kind: str, name: str, scenario: Callable[[Ctx], Awaitable[list[Row]]]) -> list[Row]:
    """Run one scenario of a kind --only selected; a failure becomes a row, and the others still run."""
    if kind not in ctx.only:
        return []
    log(f"{ctx.backend}: {name}")
    try:
        with profiled(ctx.gateway_pid, ctx.profile, f"{ctx.backend} {name}"):
            return await scenario(ctx)
    except Exception as exc:
        traceback.print_exc()
        gateway_log = ctx.gateway.log_tail(10) if ctx.gateway else ""
        log(f"{ctx.backend}: {name} failed; the gateway's last log lines:\n{gateway_log}")
        return [Row(ctx.backend, name, f"failed: {type(exc).__name__}: {exc}"[:300])]


if __name__ == "__main__":
    main()
