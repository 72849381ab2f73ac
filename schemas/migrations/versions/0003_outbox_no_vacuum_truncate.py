"""outbox: vacuum never truncates the table file

Revision ID: 0003
Revises: 0002

Truncating the empty tail of a table takes an ACCESS EXCLUSIVE lock while VACUUM checks the
pages backwards; on the outbox that blocks every writer and relay while it lasts. In one
pair of `herald bench relay` runs: p99 commit->ack at 1,000 events/s of 140.7 ms with
truncation, 13.4 ms without.
Removed rows' space is reused instead; after an exceptional backlog an operator may run
`VACUUM (TRUNCATE) outbox` at a quiet moment to give the space back.
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE outbox SET (vacuum_truncate = false)")


def downgrade() -> None:
    op.execute("ALTER TABLE outbox RESET (vacuum_truncate)")
