"""Job rows for store tests, inserted directly (no kind, spec or executor involved)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import Engine, insert

from tunelab.schema.models import Job, Workload


def make_job(engine: Engine, name: str = "job", *, job_id: int | None = None) -> int:
    """Insert a workload and a pending job on it (with `job_id` if given); returns its id."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        workload_id = conn.execute(
            insert(Workload.__table__)
            .values(
                hash=uuid.uuid4().hex,
                kind="test",
                description="test workload",
                definition={},
                created_at=now,
            )
            .returning(Workload.__table__.c.id)
        ).scalar_one()
        ids = {} if job_id is None else {"id": job_id}
        return conn.execute(
            insert(Job.__table__)
            .values(
                **ids,
                name=name,
                kind="test",
                spec={},
                workload_id=workload_id,
                target="cpu",
                status="pending",
                n_planned=0,
                n_done=0,
                n_ok=0,
                n_failed=0,
                objective="latency_s",
                direction="minimize",
                created_at=now,
            )
            .returning(Job.__table__.c.id)
        ).scalar_one()
