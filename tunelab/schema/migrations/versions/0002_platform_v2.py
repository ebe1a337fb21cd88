"""platform v2: objectives, steps, artifacts, kind data; trials keyed by a hash

Jobs also gain a final verdict (noise-aware winner) and a lease (driver ownership);
remeasurements hold the finalists' interleaved re-measurement rounds.

Trials: `candidate` becomes the SHA-256 of the parameters' canonical JSON (the JSON
itself stays in `params`); the primary objective's `value` and every named objective;
each repeat's latency; platform-owned facts move out of `extra` into columns
(`baseline`, `model`, `model_version`, `attempt_errors`); a `running` trial carries a
heartbeat. Jobs: the objective they rank by and its best value. New tables: steps,
blobs + blob_chunks, artifacts, kind_data. Existing rows are carried over: a
pipeline-search trial's objective is its median latency, minimised.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PLATFORM_EXTRA = ("baseline", "model", "model_version", "earlier_attempts")
BATCH = 2000


def _canonical(params: Any) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _carry_trials_over(conn: sa.Connection) -> None:
    trials = sa.table(
        "trials",
        sa.column("id", sa.Integer),
        sa.column("candidate", sa.String),
        sa.column("params", sa.JSON),
        sa.column("extra", sa.JSON),
        sa.column("latency_median_s", sa.Float),
        sa.column("value", sa.Float),
        sa.column("objectives", sa.JSON),
        sa.column("baseline", sa.String),
        sa.column("model", sa.String),
        sa.column("model_version", sa.Integer),
        sa.column("attempt_errors", sa.JSON),
    )
    stmt = (
        sa.update(trials)
        .where(trials.c.id == sa.bindparam("_id"))
        .values(
            candidate=sa.bindparam("candidate"),
            extra=sa.bindparam("extra", type_=JSONType),
            value=sa.bindparam("value"),
            objectives=sa.bindparam("objectives", type_=JSONType),
            baseline=sa.bindparam("baseline"),
            model=sa.bindparam("model"),
            model_version=sa.bindparam("model_version"),
            attempt_errors=sa.bindparam("attempt_errors", type_=JSONType),
        )
    )
    last = 0
    while True:
        rows = conn.execute(
            sa.select(trials.c.id, trials.c.params, trials.c.extra, trials.c.latency_median_s)
            .where(trials.c.id > last)
            .order_by(trials.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return
        updates = []
        for tid, params, extra, median in rows:
            params, extra = _json(params), dict(_json(extra) or {})
            version = extra.get("model_version")
            updates.append(
                {
                    "_id": tid,
                    "candidate": hashlib.sha256(_canonical(params).encode()).hexdigest(),
                    "extra": {k: v for k, v in extra.items() if k not in PLATFORM_EXTRA},
                    "value": median,
                    "objectives": {"latency_s": median} if median is not None else None,
                    "baseline": extra.get("baseline"),
                    "model": extra.get("model"),
                    "model_version": int(version) if version is not None else None,
                    "attempt_errors": extra.get("earlier_attempts"),
                }
            )
        conn.execute(stmt, updates)
        last = rows[-1][0]


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("value", sa.Float(), nullable=True))
        batch.add_column(sa.Column("objectives", JSONType, nullable=True))
        batch.add_column(sa.Column("latencies_s", JSONType, nullable=True))
        batch.add_column(sa.Column("attempt_errors", JSONType, nullable=True))
        batch.add_column(sa.Column("baseline", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("model", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("model_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch.alter_column("finished_at", existing_type=sa.DateTime(timezone=True), nullable=True)
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("objective", sa.String(length=64), nullable=False, server_default="latency_s")
        )
        batch.add_column(
            sa.Column("direction", sa.String(length=8), nullable=False, server_default="minimize")
        )
        batch.add_column(sa.Column("best_value", sa.Float(), nullable=True))
        batch.add_column(sa.Column("verdict", JSONType, nullable=True))
        batch.add_column(sa.Column("lease", sa.Integer(), nullable=False, server_default="0"))

    conn = op.get_bind()
    _carry_trials_over(conn)
    conn.execute(sa.text("UPDATE jobs SET best_value = best_latency_s"))

    with op.batch_alter_table("trials") as batch:
        batch.alter_column(
            "candidate", existing_type=sa.String(length=512), type_=sa.String(length=64)
        )
        batch.create_index(
            batch.f("ix_trials_job_id_status_value"), ["job_id", "status", "value"], unique=False
        )

    op.create_table(
        "remeasurements",
        sa.Column("id", BigId, nullable=False),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("trial_id", BigId, nullable=False),
        sa.Column("round", sa.Integer(), nullable=False),
        sa.Column("latencies_s", JSONType, nullable=False),
        sa.Column("latency_median_s", sa.Float(), nullable=False),
        sa.Column("worker_node", sa.String(length=255), nullable=True),
        sa.Column("measured_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_remeasurements_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["trial_id"],
            ["trials.id"],
            name=op.f("fk_remeasurements_trial_id_trials"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_remeasurements")),
        sa.UniqueConstraint("trial_id", "round", name=op.f("uq_remeasurements_trial_id_round")),
    )
    op.create_table(
        "steps",
        sa.Column("id", BigId, nullable=False),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("trial_key", sa.String(length=64), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=False),
        sa.Column("metrics", JSONType, nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_steps_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_steps")),
        sa.UniqueConstraint(
            "job_id", "trial_key", "step", name=op.f("uq_steps_job_id_trial_key_step")
        ),
    )
    op.create_table(
        "blobs",
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("n_chunks", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("hash", name=op.f("pk_blobs")),
    )
    op.create_table(
        "blob_chunks",
        sa.Column("blob_hash", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["blob_hash"],
            ["blobs.hash"],
            name=op.f("fk_blob_chunks_blob_hash_blobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("blob_hash", "seq", name=op.f("pk_blob_chunks")),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", BigId, nullable=False),
        sa.Column("job_id", BigId, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("trial_key", sa.String(length=64), nullable=False),
        sa.Column("checkpoint", sa.Boolean(), nullable=False),
        sa.Column("step", sa.BigInteger(), nullable=True),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("blob_hash", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("meta", JSONType, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["blob_hash"], ["blobs.hash"], name=op.f("fk_artifacts_blob_hash_blobs")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_artifacts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
        sa.UniqueConstraint("job_id", "name", name=op.f("uq_artifacts_job_id_name")),
    )
    op.create_index(op.f("ix_artifacts_blob_hash"), "artifacts", ["blob_hash"], unique=False)
    op.create_table(
        "kind_data",
        sa.Column("id", BigId, nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("key", JSONType, nullable=False),
        sa.Column("value", JSONType, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_kind_data")),
        sa.UniqueConstraint("kind", "key_hash", name=op.f("uq_kind_data_kind_key_hash")),
    )


def downgrade() -> None:
    op.drop_table("kind_data")
    op.drop_index(op.f("ix_artifacts_blob_hash"), table_name="artifacts")
    op.drop_table("artifacts")
    op.drop_table("blob_chunks")
    op.drop_table("blobs")
    op.drop_table("steps")
    op.drop_table("remeasurements")
    conn = op.get_bind()
    rows = conn.execute(
        sa.text("SELECT id, params, extra, baseline, model, model_version, attempt_errors "
                "FROM trials WHERE status != 'running'")
    ).all()  # fmt: skip
    conn.execute(sa.text("DELETE FROM trials WHERE status = 'running'"))
    updates = []
    for tid, params, extra, baseline, model, version, errors in rows:
        extra = dict(_json(extra) or {})
        moved = {"baseline": baseline, "model": model, "model_version": version,
                 "earlier_attempts": _json(errors)}  # fmt: skip
        for key, value in moved.items():
            if value is not None:
                extra[key] = value
        updates.append({"_id": tid, "candidate": _canonical(_json(params)), "extra": extra})
    with op.batch_alter_table("trials") as batch:
        batch.drop_index(batch.f("ix_trials_job_id_status_value"))
        batch.alter_column(
            "candidate", existing_type=sa.String(length=64), type_=sa.String(length=512)
        )
    if updates:
        t = sa.table(
            "trials", sa.column("id"), sa.column("candidate"), sa.column("extra", JSONType)
        )
        conn.execute(
            sa.update(t)
            .where(t.c.id == sa.bindparam("_id"))
            .values(
                candidate=sa.bindparam("candidate"), extra=sa.bindparam("extra", type_=JSONType)
            ),
            updates,
        )
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lease")
        batch.drop_column("verdict")
        batch.drop_column("best_value")
        batch.drop_column("direction")
        batch.drop_column("objective")
    with op.batch_alter_table("trials") as batch:
        for col in ("heartbeat_at", "model_version", "model", "baseline", "attempt_errors",
                    "latencies_s", "objectives", "value"):  # fmt: skip
            batch.drop_column(col)
        batch.alter_column("finished_at", existing_type=sa.DateTime(timezone=True), nullable=False)
