"""review desk: users, sessions, login attempts, decisions (append-only), labels.final

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
# frozen copies of tables.py's strings: a migration must not change when the code does
QUEUE_KEY_TRIGGER = '\nCASE\n    WHEN "trigger" IS NULL THEN 1\n    ELSE 0\nEND'
QUEUE_KEY_STRENGTH = ("\nCASE strength\n    WHEN 'strong' THEN 0\n    WHEN 'moderate' THEN 1\n"
                      "    WHEN 'weak' THEN 2\n    ELSE 3\nEND")

# The audit trail is append-only in the database itself, not only in our code: any UPDATE, DELETE
# (or, on PostgreSQL, TRUNCATE) of decisions fails.
SQLITE_TRIGGERS = [
    "CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions "
    "BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END",
    "CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions "
    "BEGIN SELECT RAISE(ABORT, 'decisions are append-only'); END",
]
POSTGRES_TRIGGERS = [
    "CREATE FUNCTION decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN RAISE EXCEPTION 'decisions are append-only'; END $$",
    "CREATE TRIGGER decisions_no_change BEFORE UPDATE OR DELETE ON decisions "
    "FOR EACH ROW EXECUTE FUNCTION decisions_append_only()",
    "CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions "
    "FOR EACH STATEMENT EXECUTE FUNCTION decisions_append_only()",
]


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("name", name=op.f("uq_users_name")),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("last_seen_at", TS, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"], unique=False)
    op.create_table(
        "login_attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("ip", sa.String(length=64), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_attempts")),
    )
    op.create_index("ix_login_attempts_name", "login_attempts", ["name", "created_at"])
    op.create_index("ix_login_attempts_ip", "login_attempts", ["ip", "created_at"])
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.Column("user_name", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=20), nullable=False),
        sa.Column("from_state", sa.String(length=20), nullable=False),
        sa.Column("to_state", sa.String(length=20), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("undoes_id", sa.Integer(), nullable=True),
        sa.Column("label_version", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(length=100), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(["label_id"], ["labels.id"],
                                name=op.f("fk_decisions_label_id_labels")),
        sa.ForeignKeyConstraint(["undoes_id"], ["decisions.id"],
                                name=op.f("fk_decisions_undoes_id_decisions")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_decisions_idempotency_key")),
    )
    op.create_index("ix_decisions_label_id", "decisions", ["label_id"])
    op.create_index("ix_decisions_user_name", "decisions", ["user_name", "id"])
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("final", sa.JSON(), nullable=True))
    op.create_index("ix_labels_claimed_by", "labels", ["claimed_by"])
    # the review order as an index (see tables.py: same expressions as queue.ORDER)
    op.create_index("ix_labels_queue", "labels", [
        "review_state", sa.text(f"({QUEUE_KEY_TRIGGER})"), sa.text(f"({QUEUE_KEY_STRENGTH})"),
        sa.text("confidence DESC"), sa.text("id DESC")])

    dialect = op.get_bind().dialect.name
    for ddl in {"sqlite": SQLITE_TRIGGERS, "postgresql": POSTGRES_TRIGGERS}.get(dialect, []):
        op.execute(ddl)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS decisions_no_change ON decisions")
        op.execute("DROP TRIGGER IF EXISTS decisions_no_truncate ON decisions")
        op.execute("DROP FUNCTION IF EXISTS decisions_append_only()")
    op.drop_index("ix_labels_queue", table_name="labels")
    op.drop_index("ix_labels_claimed_by", table_name="labels")
    with op.batch_alter_table("labels", schema=None) as batch_op:
        batch_op.drop_column("final")
    op.drop_index("ix_decisions_user_name", table_name="decisions")
    op.drop_index("ix_decisions_label_id", table_name="decisions")
    op.drop_table("decisions")  # SQLite drops the table's triggers with it
    op.drop_index("ix_login_attempts_ip", table_name="login_attempts")
    op.drop_index("ix_login_attempts_name", table_name="login_attempts")
    op.drop_table("login_attempts")
    op.drop_index("ix_sessions_user_id", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("users")
