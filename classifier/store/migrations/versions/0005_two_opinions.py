"""two opinions: both labelers' proposals on a label, their disagreement, the encoder version

`proposals` keeps what the encoder and the LLM each proposed for a combined label, which side
decided each field and why the LLM was skipped (see classifier/combine/provenance.py);
`disagreement` counts the class fields on which the two differ (null: only one opinion);
`encoder_version` is the evidence-encoder version that made or last re-scored the label. The
`model_versions` table lists the encoder versions `evidence model train --from-decisions` made,
with their gate result, and which one is active.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("proposals", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("disagreement", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("encoder_version", sa.String(length=40), nullable=True))
        batch_op.create_index("ix_labels_encoder_version", ["encoder_version"], unique=False)
    op.create_table(
        "model_versions",
        sa.Column("version", sa.String(length=40), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("parent", sa.String(length=40), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("gate", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("activated_at", TS, nullable=True),
        sa.PrimaryKeyConstraint("version", name=op.f("pk_model_versions")),
    )


def downgrade() -> None:
    op.drop_table("model_versions")
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.drop_index("ix_labels_encoder_version")
        batch_op.drop_column("encoder_version")
        batch_op.drop_column("disagreement")
        batch_op.drop_column("proposals")
