"""node health: what else ran on the node of each measurement, and the job's busy mark

Trials and remeasurements gain `node_health` (JSON: runnable tasks not ours, load,
steal, clock, the wait for quiet, `busy`; platform/health.py); jobs gain `busy_trials`
and `busy_rounds`, how many of their trials and final rounds were measured on a busy
node. Existing rows carry no health (NULL) and count none busy.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONType = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("trials") as batch:
        batch.add_column(sa.Column("node_health", JSONType, nullable=True))
    with op.batch_alter_table("remeasurements") as batch:
        batch.add_column(sa.Column("node_health", JSONType, nullable=True))
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("busy_trials", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("busy_rounds", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("busy_rounds")
        batch.drop_column("busy_trials")
    with op.batch_alter_table("remeasurements") as batch:
        batch.drop_column("node_health")
    with op.batch_alter_table("trials") as batch:
        batch.drop_column("node_health")
