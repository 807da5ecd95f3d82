"""queue disagreement: the review order ranks contested labels above agreeing confirmations

`ix_labels_queue` gains a key after strength: 0 when the two opinions disagree
(`disagreement >= 1`) or the proposal undermines the thesis, else 1 (queue.py ORDER).

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# frozen copies of tables.py's strings: a migration must not change when the code does
QUEUE_KEY_TRIGGER = '\nCASE\n    WHEN "trigger" IS NULL THEN 1\n    ELSE 0\nEND'
QUEUE_KEY_STRENGTH = ("\nCASE strength\n    WHEN 'strong' THEN 0\n    WHEN 'moderate' THEN 1\n"
                      "    WHEN 'weak' THEN 2\n    ELSE 3\nEND")
QUEUE_KEY_CONTESTED = ("\nCASE\n    WHEN disagreement >= 1 OR direction = 'undermines' THEN 0\n"
                       "    ELSE 1\nEND")


def _queue_index(*keys: str) -> None:
    op.create_index("ix_labels_queue", "labels", [
        "review_state", *(sa.text(f"({k})") for k in keys),
        sa.text("confidence DESC"), sa.text("id DESC")])


def upgrade() -> None:
    # IF EXISTS: on SQLite a batch table rebuild (0005's downgrade) loses expression indexes,
    # which SQLite cannot reflect; going up again through here restores the index
    op.drop_index("ix_labels_queue", table_name="labels", if_exists=True)
    _queue_index(QUEUE_KEY_TRIGGER, QUEUE_KEY_STRENGTH, QUEUE_KEY_CONTESTED)


def downgrade() -> None:
    op.drop_index("ix_labels_queue", table_name="labels", if_exists=True)
    _queue_index(QUEUE_KEY_TRIGGER, QUEUE_KEY_STRENGTH)
