"""Account: index only the pending statement lines by transfer (a partial index).

The only query by ``entries.transfer_id`` deletes a hold's PENDING lines when it is posted,
voided or expires. Booked lines, nearly all of them, no longer enter an index keyed by a
random transfer id: each batch of 500 transfers dirtied ~1,000 random index pages for it
(half the bytes each commit wrote and synced on SQLite).

Revision ID: account_0002
"""

import sqlalchemy as sa
from alembic import op

revision = "account_0002"
down_revision = "account_0001"
branch_labels = None
depends_on = None

PENDING = sa.text("status = 'PENDING'")


def upgrade() -> None:
    op.drop_index("ix_entries_transfer_id", table_name="entries")
    op.create_index(
        "ix_entries_pending_transfer_id",
        "entries",
        ["transfer_id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_entries_pending_transfer_id", table_name="entries")
    op.create_index("ix_entries_transfer_id", "entries", ["transfer_id"])
