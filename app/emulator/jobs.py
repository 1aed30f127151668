"""The job timeline shared by every emulated API family; each family subclasses Job for its wire format."""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from app.emulator.faults import Faults

# (state, start as a fraction of generate_s), latest first so the first match is the current state.
PHASES = (("generating", 0.4), ("queuing", 0.2), ("waiting", 0.0))
TERMINAL = ("success", "fail")
# Kie's largest documented batch is seedream's max_images 6; the cap only stops absurd inputs
# from listing thousands of result URLs.
MAX_IMAGES = 10


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def image_count(value: Any) -> int:
    """A requested image count (an int, or a digit string like Kie's num_images "2"); 1 when unusable."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        return 1
    return min(value, MAX_IMAGES)


@dataclass(eq=False)
class Job(ABC):
    """One job of any family. The timeline (waiting -> queuing -> generating -> success|fail) lives here;
    subclasses only say how the job's body maps to images and how the job looks on their wire."""

    api: ClassVar[str]  # the family, as listed by /emulator/tasks
    id_prefix: ClassVar[str]  # ids differ per family, so a mixed-up id is easy to spot
    sends_callbacks: ClassVar[bool] = True
    # Kie limits and bills per account, so all its families share one create window and one credit balance;
    # kvid.ai is another service with its own account.
    kie_account: ClassVar[bool] = True

    task_id: str
    body: dict[str, Any]  # the create request body, as received
    faults: Faults  # snapshot taken at create time, so later fault changes don't alter this job
    created: float
    generate_s: float  # 0 when callback_before_response made the job terminal at once
    failed: bool
    drop_drawn: bool  # the drop_callbacks draw; it only matters when there is a callback to drop
    base_url: str  # of the create request, so result URLs work wherever the emulator is served
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    duplicate_drawn: bool = False  # the duplicate_rate draw: one more delivery of the callback

    @property
    @abstractmethod
    def model(self) -> str | None: ...

    @property
    @abstractmethod
    def ratio(self) -> tuple[float, float]: ...

    @property
    @abstractmethod
    def extension(self) -> str:
        """'png' or 'jpg' (images.MEDIA_TYPES keys)."""

    @property
    def count(self) -> int:
        return 1

    @property
    def input(self) -> dict[str, Any]:
        """What /emulator/tasks shows as the request: the flat body without its callback URL."""
        return {key: value for key, value in self.body.items() if key != "callBackUrl"}

    @abstractmethod
    def record(self, now: float) -> dict[str, Any]:
        """The family's status-query payload at time `now`."""

    def callback_body(self) -> dict[str, Any]:
        raise NotImplementedError(f"{self.api} jobs send no callbacks")

    @property
    def callback_url(self) -> str | None:
        return (self.body.get("callBackUrl") or None) if self.sends_callbacks else None

    @property
    def dropped(self) -> bool:
        return self.drop_drawn and self.callback_url is not None

    @property
    def credits(self) -> float:
        """What the job costs (recordInfo's creditsConsumed, kvid's used_credit, the balance): nothing if it fails."""
        return 0 if self.failed else self.faults.credits_per_image * self.count

    @property
    def final_state(self) -> str:
        return "fail" if self.failed else "success"

    @property
    def result_urls(self) -> list[str]:
        return [f"{self.base_url}files/{self.task_id}/{n}.{self.extension}" for n in range(self.count)]

    def phase(self, now: float) -> tuple[str, float]:
        """The current state and the time it began."""
        elapsed = now - self.created
        if elapsed >= self.generate_s:
            return self.final_state, self.created + self.generate_s
        state, start = next((p for p in PHASES if elapsed >= p[1] * self.generate_s), PHASES[-1])
        return state, self.created + start * self.generate_s

    def progress(self, now: float) -> float:
        """Elapsed share of generate_s, 0.0..1.0 (1.0 once terminal)."""
        if self.generate_s <= 0:
            return 1.0
        return min(1.0, max(0.0, (now - self.created) / self.generate_s))

    def summary(self, now: float) -> dict[str, Any]:
        return {
            "taskId": self.task_id,
            "api": self.api,
            "model": self.model,
            "input": self.input,
            "callBackUrl": self.callback_url,
            "state": self.phase(now)[0],
            "createdAt": self.created,
            "deliveries": self.deliveries,
            "dropped": self.dropped,
        }
