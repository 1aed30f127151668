"""The in-memory store behind one emulator app: jobs of every family, uploads, counters, faults, callbacks."""

import asyncio
import dataclasses
import random
import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import httpx
from starlette.requests import Request

from app.emulator.faults import Faults
from app.emulator.jobs import Job
from app.providers.kie import signature as kie_signature

# recordInfoByTask counts status queries of every family per job id (market, 4o, Flux, kvid status and result);
# fileDownloadsByPath counts result-file GETs per path. rateLimited counts creates refused by create_rate_limit.
COUNTERS = (
    "createTask",
    "recordInfo",
    "gpt4oGenerate",
    "gpt4oRecordInfo",
    "fluxGenerate",
    "fluxRecordInfo",
    "kvidGenerate",
    "kvidStatus",
    "kvidResult",
    "upload",
    "credit",
    "rateLimited",
    "fileDownloads",
)


@dataclasses.dataclass(frozen=True)
class Upload:
    content: bytes
    mime_type: str


class Emulator:
    """Exposed as app.state.emulator."""

    def __init__(self, api_key: str, hmac_key: str | None, faults: Faults, kvid_api_key: str) -> None:
        self.api_key = api_key
        self.kvid_api_key = kvid_api_key
        self.hmac_key = hmac_key
        self.client: httpx.AsyncClient | None = None  # owned by the app lifespan
        self.clock: Callable[[], float] = time.time  # replaceable so tests can step jobs through states
        self._deliveries: set[asyncio.Task[None]] = set()
        self.reset(faults)

    def reset(self, faults: Faults | None = None) -> None:
        self._cancel_deliveries()  # callbacks of forgotten jobs must not reach the next test's receiver
        self.jobs: dict[str, Job] = {}
        self.uploads: dict[str, Upload] = {}  # by filePath
        self.calls: dict[str, Any] = {
            **dict.fromkeys(COUNTERS, 0),
            "recordInfoByTask": Counter(),
            "fileDownloadsByPath": Counter(),
        }
        self.kie_creates: deque[float] = deque()  # times of accepted Kie creates, while create_rate_limit is set
        self.set_faults(faults or Faults())

    def set_faults(self, faults: Faults) -> None:
        self.faults = faults
        self.rng = random.Random(faults.seed)
        # A new balance starts at starting_credits: successes so far were charged to the old one.
        now = self.clock()
        self.charged_before = {task_id for task_id, job in self.jobs.items() if job.phase(now)[0] == "success"}

    def balance(self) -> float:
        """The Kie account's remaining credits: starting_credits less what its jobs have cost since faults were set.
        Jobs finish by the clock rather than by an event, so successes are summed when asked."""
        now = self.clock()
        spent = sum(
            job.credits
            for task_id, job in self.jobs.items()
            if job.kie_account and task_id not in self.charged_before and job.phase(now)[0] == "success"
        )
        return self.faults.starting_credits - spent

    def rate_limit_refusal(self, job_class: type[Job]) -> str | None:
        """Kie's message if one more create of job_class would exceed create_rate_limit, else None.
        Only accepted creates fill the sliding window (create_job records them)."""
        limit = self.faults.create_rate_limit
        if limit is None or not job_class.kie_account:
            return None
        count, window_s = limit
        # A create exactly window_s ago has left the window.
        while self.kie_creates and self.kie_creates[0] <= self.clock() - window_s:
            self.kie_creates.popleft()
        return None if len(self.kie_creates) < count else f"Rate limited: at most {count} new tasks per {window_s} s"

    def pop_create_fault(self) -> tuple[str, int] | None:
        """The next queued create failure, consuming it: ("http", status) first, then ("body", code)."""
        faults = self.faults
        for kind, name in (("http", "create_http_errors"), ("body", "create_errors")):
            queue = getattr(faults, name)
            if queue:
                self.faults = dataclasses.replace(faults, **{name: queue[1:]})
                return kind, queue[0]
        return None

    def create_job(self, job_class: type[Job], body: dict[str, Any], base_url: str, **fields: Any) -> Job:
        faults = self.faults
        # Every draw always happens, in a fixed order, so a seed gives the same outcomes per job of any family.
        failed = self.rng.random() < faults.fail_rate
        drop_drawn = self.rng.random() < faults.drop_callbacks
        duplicate_drawn = self.rng.random() < faults.duplicate_rate
        generate_s = 0.0 if faults.callback_before_response else faults.generate_s
        task_id = job_class.id_prefix + secrets.token_hex(12)
        job = job_class(task_id, body, faults, self.clock(), generate_s, failed, drop_drawn, base_url, **fields)
        job.duplicate_drawn = duplicate_drawn
        self.jobs[task_id] = job
        if job.kie_account and faults.create_rate_limit is not None:
            self.kie_creates.append(job.created)
        return job

    async def start_callbacks(self, job: Job) -> None:
        """Arrange the job's callbacks; with callback_before_response, deliver them before returning."""
        if job.callback_url is None or job.dropped:
            return
        if job.faults.callback_before_response:
            await self.run_callbacks(job)
            return
        task = asyncio.create_task(self.run_callbacks(job))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def run_callbacks(self, job: Job) -> None:
        """Wait for the job to finish (plus the callback delay), then deliver it 1 + duplicates times."""
        await asyncio.sleep(job.generate_s + job.faults.callback_delay_s)
        for _ in range(1 + job.faults.duplicate_callbacks + int(job.duplicate_drawn)):
            await self.deliver(job)

    async def deliver(self, job: Job) -> dict[str, Any]:
        """POST the job's callback once, without retrying, and record the outcome."""
        record = {"at": self.clock(), **await self._post_callback(job)}
        job.deliveries.append(record)
        return record

    async def _post_callback(self, job: Job) -> dict[str, Any]:
        if self.client is None:
            return {"error": "emulator lifespan is not running, so it has no HTTP client"}
        headers = {}
        if self.hmac_key is not None:
            # Every Kie family signs the same way: over its own taskId.
            timestamp = str(int(self.clock()))
            headers[kie_signature.TIMESTAMP_HEADER] = timestamp
            headers[kie_signature.SIGNATURE_HEADER] = kie_signature.sign(self.hmac_key, job.task_id, timestamp)
        try:
            response = await self.client.post(job.callback_url or "", json=job.callback_body(), headers=headers)
        except httpx.HTTPError as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        return {"status": response.status_code}

    def _cancel_deliveries(self) -> list[asyncio.Task[None]]:
        tasks = list(self._deliveries)
        for task in tasks:
            task.cancel()
        return tasks

    async def close(self) -> None:
        await asyncio.gather(*self._cancel_deliveries(), return_exceptions=True)


def store_of(request: Request) -> Emulator:
    return request.app.state.emulator
