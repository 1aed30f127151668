"""A stand-in for DNS: made-up names answered from a script, every other name by the system."""

from __future__ import annotations

from collections import Counter

from app.outbox.outbound import resolve


class Scripted:
    """Each lookup of a scripted name takes its next answer (the last one repeats), so a test can make
    a name change its address between two lookups; `lookups` counts them per name."""

    def __init__(self, script: dict[str, list[list[str]]]) -> None:
        self.script = {host: list(answers) for host, answers in script.items()}
        self.lookups: Counter[str] = Counter()

    async def __call__(self, host: str, port: int) -> list[str]:
        if host not in self.script:
            return await resolve(host, port)
        self.lookups[host] += 1
        answers = self.script[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]
