"""Copying result images to imagehook's own storage before the provider's URLs expire."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from app.db.models import StoredFile, Task


def enqueue(session: AsyncSession, task: Task, now: datetime) -> None:
    """One row per result image, written with the success itself: a crash cannot lose the copy."""
    for n, url in enumerate(task.image_urls):
        session.add(
            StoredFile(task_id=task.id, n=n, source_url=url, state="pending", next_attempt_at=now, created_at=now)
        )
