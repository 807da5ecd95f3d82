"""Tables, as SQLAlchemy Core. The schema changes only through migrations in `migrations/`;
`tests/test_store.py` checks that these definitions and the migrated database agree.

Every item ends in a stored state: entries and pairs carry `state`, and `skips` records why
anything was skipped or failed (stage, reason, detail, time).
"""

from __future__ import annotations

from sqlalchemy import (JSON, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Table, Text, UniqueConstraint, text)

metadata = MetaData(naming_convention={
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})

TS = DateTime(timezone=True)

runs = Table(
    "runs", metadata,
    Column("id", Integer, primary_key=True),
    Column("command", String(40), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("finished_at", TS),
    Column("status", String(20), nullable=False, default="running"),  # running|done|failed
    Column("counts", JSON, nullable=False, default=dict),
)

feeds = Table(
    "feeds", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("url", Text, nullable=False),
    Column("tags", JSON, nullable=False, default=list),
    Column("poll_minutes", Integer, nullable=False, default=60),
    Column("enabled", Boolean, nullable=False, default=True),
    Column("etag", Text),
    Column("last_modified", Text),
    Column("last_polled_at", TS),
    Column("last_status", Integer),
    Column("last_error", Text),
    Column("consecutive_errors", Integer, nullable=False, default=0),
    Column("error_count", Integer, nullable=False, default=0),
    Column("next_poll_at", TS),
    Column("disabled_reason", Text),
    Column("created_at", TS, nullable=False),
    # worker lease (migration 0004): who is polling this feed, and until when the claim holds
    Column("claimed_by", String(100)),
    Column("lease_until", TS),
)

entries = Table(
    "entries", metadata,
    Column("id", Integer, primary_key=True),
    Column("feed_id", Integer, ForeignKey("feeds.id"), nullable=False),
    Column("guid", Text, nullable=False),
    Column("link", Text),
    Column("title", Text, nullable=False, default=""),
    Column("summary", Text, nullable=False, default=""),
    Column("author", Text),
    Column("published", TS),
    Column("state", String(20), nullable=False, default="pending"),  # pending|done|skipped|failed
    Column("article_id", Integer, ForeignKey("articles.id")),
    Column("created_at", TS, nullable=False),
    # worker lease (migration 0004); `claims` counts claims so a poison item ends 'failed'
    Column("claimed_by", String(100)),
    Column("lease_until", TS),
    Column("claims", Integer, nullable=False, default=0, server_default="0"),
    UniqueConstraint("feed_id", "guid", name="uq_entries_feed_guid"),
)
Index("ix_entries_state", entries.c.state)

stories = Table(
    "stories", metadata,
    Column("id", Integer, primary_key=True),
    Column("created_at", TS, nullable=False),
)

articles = Table(
    "articles", metadata,
    Column("id", Integer, primary_key=True),
    Column("url", Text, nullable=False),
    Column("canonical_url", String(2048), nullable=False, unique=True),
    Column("title", Text, nullable=False, default=""),
    Column("author", Text),
    Column("published", TS),
    Column("site_name", Text),
    Column("text", Text, nullable=False),
    Column("text_sha256", String(64), nullable=False, unique=True),
    Column("language", String(16)),
    Column("extracted_from", String(16), nullable=False, default="page"),
    Column("minhash", LargeBinary),
    Column("story_id", Integer, ForeignKey("stories.id")),
    Column("feed_id", Integer, ForeignKey("feeds.id")),
    Column("created_at", TS, nullable=False),
)
Index("ix_articles_story_id", articles.c.story_id)

# Stage 3's LSH buckets: one row per (article, band) of its MinHash signature (see dedupe.py).
from sqlalchemy import BigInteger  # noqa: E402  (kept beside the one table that needs it)

article_bands = Table(
    "article_bands", metadata,
    Column("article_id", Integer, ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True),
    Column("band_key", BigInteger, primary_key=True),
)
Index("ix_article_bands_band_key", article_bands.c.band_key)

skips = Table(
    "skips", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(10), nullable=False),  # skip|failure
    Column("stage", String(20), nullable=False),
    Column("reason", String(60), nullable=False),  # SkipReason value or error type
    Column("detail", Text, nullable=False, default=""),
    Column("feed_id", Integer, ForeignKey("feeds.id")),
    Column("entry_id", Integer, ForeignKey("entries.id")),
    Column("article_id", Integer, ForeignKey("articles.id")),
    Column("thesis_id", String(100)),
    Column("url", Text),
    Column("run_id", Integer, ForeignKey("runs.id")),
    Column("created_at", TS, nullable=False),
)
Index("ix_skips_stage_reason", skips.c.stage, skips.c.reason)

theses = Table(
    "theses", metadata,
    Column("id", String(100), primary_key=True),
    Column("title", Text, nullable=False),
    Column("content_hash", String(64), nullable=False),
    Column("initial_probability", Float, nullable=False),
    Column("probability", Float, nullable=False),  # the last value an editor applied
    Column("updated_at", TS, nullable=False),
)

# An (article, thesis) pair: routed (stage 4) and labeled (stage 5) at most once per cache key.
pairs = Table(
    "pairs", metadata,
    Column("id", Integer, primary_key=True),
    Column("article_id", Integer, ForeignKey("articles.id"), nullable=False),
    Column("thesis_id", String(100), nullable=False),
    Column("state", String(20), nullable=False, default="pending"),  # pending|skipped|labeled|failed
    Column("route_score", Float),
    Column("error_type", String(60)),
    Column("error_detail", Text),
    Column("last_raw", Text),
    Column("claimed_by", String(100)),
    Column("lease_until", TS),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("claims", Integer, nullable=False, default=0, server_default="0"),  # 0004: poison guard
    UniqueConstraint("article_id", "thesis_id", name="uq_pairs_article_thesis"),
)
Index("ix_pairs_state", pairs.c.state)

labels = Table(
    "labels", metadata,
    Column("id", Integer, primary_key=True),
    Column("pair_id", Integer, ForeignKey("pairs.id"), nullable=False),
    Column("article_id", Integer, ForeignKey("articles.id"), nullable=False),
    Column("thesis_id", String(100), nullable=False),
    Column("cache_key", String(64), nullable=False, unique=True),
    # the label (spec fields)
    Column("relevant", Boolean, nullable=False),
    Column("evidence_type", String(20)),
    Column("direction", String(20)),
    Column("strength", String(20)),
    Column("confidence", Float, nullable=False),
    Column("rationale", Text, nullable=False, default=""),
    Column("quotes", JSON, nullable=False, default=list),
    Column("trigger", String(100)),
    # how it was made
    Column("backend", String(40), nullable=False),
    Column("model", String(300), nullable=False),
    Column("prompt_hash", String(64), nullable=False),
    Column("schema_hash", String(64), nullable=False),
    Column("thesis_hash", String(64), nullable=False),
    Column("tokens_in", Integer, nullable=False, default=0),
    Column("tokens_out", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("attempts", Integer, nullable=False, default=1),
    # review (stage 6)
    Column("review_state", String(20), nullable=False, default="pending"),
    Column("version", Integer, nullable=False, default=1),  # bumped on every decision: stale forms
    Column("claimed_by", String(100)),
    Column("claim_until", TS),
    Column("created_at", TS, nullable=False),
    # the effective judged label {relevant, evidence_type, direction, strength, trigger} after the
    # latest decision: the proposal (approved) or the edit (corrected); null while pending/rejected
    Column("final", JSON),
    # two opinions (combined labeler): each side's proposal, who decided each field, LLM skips
    # (classifier/combine/provenance.py); the number of class fields the two differ on (null:
    # one opinion only); the encoder version that made or last re-scored the label
    Column("proposals", JSON),
    Column("disagreement", Integer),
    Column("encoder_version", String(40)),
)
Index("ix_labels_review_state", labels.c.review_state, labels.c.thesis_id)
Index("ix_labels_encoder_version", labels.c.encoder_version)
# The review queue's order (queue.py ORDER), as an index: a queue page reads 50 index entries
# instead of sorting every pending label. Expressions spelled exactly as queue.py uses them, and
# laid out the way PostgreSQL prints them back, so Alembic's comparison (tests/test_store.py)
# sees no difference on PostgreSQL (SQLite cannot reflect expression indexes; Alembic skips them).
QUEUE_KEY_TRIGGER = '\nCASE\n    WHEN "trigger" IS NULL THEN 1\n    ELSE 0\nEND'
QUEUE_KEY_STRENGTH = ("\nCASE strength\n    WHEN 'strong' THEN 0\n    WHEN 'moderate' THEN 1\n"
                      "    WHEN 'weak' THEN 2\n    ELSE 3\nEND")
# 0: the two opinions disagree or the proposal undermines (ranked above agreeing confirmations)
QUEUE_KEY_CONTESTED = ("\nCASE\n    WHEN disagreement >= 1 OR direction = 'undermines' THEN 0\n"
                       "    ELSE 1\nEND")
Index("ix_labels_claimed_by", labels.c.claimed_by)  # an editor's claims, released on each claim
Index("ix_labels_queue", labels.c.review_state, text(f"({QUEUE_KEY_TRIGGER})"),
      text(f"({QUEUE_KEY_STRENGTH})"), text(f"({QUEUE_KEY_CONTESTED})"),
      labels.c.confidence.desc(), labels.c.id.desc())

# Encoder versions made by `evidence model train --from-decisions` (and the shipped one, once a
# version was made): where the folder is, what it was trained from, the eval gate's verdict,
# 'promoted' | 'refused' | 'shipped', and which one labels now (exactly one row active, if any).
model_versions = Table(
    "model_versions", metadata,
    Column("version", String(40), primary_key=True),
    Column("path", Text, nullable=False),
    Column("parent", String(40)),
    Column("created_at", TS, nullable=False),
    Column("decisions", Integer, nullable=False),
    Column("gate", JSON, nullable=False),
    Column("status", String(20), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("activated_at", TS),
)

llm_calls = Table(
    "llm_calls", metadata,
    Column("id", Integer, primary_key=True),
    Column("pair_id", Integer, ForeignKey("pairs.id")),
    Column("cache_key", String(64)),
    Column("created_at", TS, nullable=False),
    Column("backend", String(40), nullable=False),
    Column("model", String(300), nullable=False),
    Column("prompt_hash", String(64), nullable=False),
    Column("schema_hash", String(64)),
    Column("request", JSON),
    Column("response", Text),
    Column("tokens_in", Integer, nullable=False, default=0),
    Column("tokens_out", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("attempt", Integer, nullable=False, default=1),
    Column("error_type", String(60)),
    Column("error_detail", Text),
)
Index("ix_llm_calls_pair_id", llm_calls.c.pair_id)


# Workers (migration 0004): one row per `evidence worker` process, kept alive by heartbeats.
# A worker whose heartbeat is older than its lease is dead; its claims expire with their leases.
workers = Table(
    "workers", metadata,
    Column("id", String(100), primary_key=True),  # host:pid:random
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("stages", JSON, nullable=False, default=list),
    Column("concurrency", Integer, nullable=False, default=1),
    Column("state", String(20), nullable=False, default="running"),  # running|stopped|lost
    Column("started_at", TS, nullable=False),
    Column("heartbeat_at", TS, nullable=False),
    Column("stopped_at", TS),
    Column("counts", JSON, nullable=False, default=dict),
)
Index("ix_workers_state", workers.c.state)

# ---------------------------------------------------------------------------------------------
# Review desk (migration 0002): users, server-side sessions, login attempts, decisions
# ---------------------------------------------------------------------------------------------

users = Table(
    "users", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False, unique=True),
    Column("role", String(20), nullable=False),  # editor|admin
    Column("password_hash", Text, nullable=False),  # argon2id, argon2-cffi's encoded form
    Column("created_at", TS, nullable=False),
    Column("disabled", Boolean, nullable=False, default=False),
)

sessions = Table(
    "sessions", metadata,
    Column("id", String(64), primary_key=True),  # SHA-256 of the cookie token, never the token
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("last_seen_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    Column("ip", String(64)),
)
Index("ix_sessions_user_id", sessions.c.user_id)

login_attempts = Table(
    "login_attempts", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(100), nullable=False),
    Column("ip", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("created_at", TS, nullable=False),
)
Index("ix_login_attempts_name", login_attempts.c.name, login_attempts.c.created_at)
Index("ix_login_attempts_ip", login_attempts.c.ip, login_attempts.c.created_at)

# Append-only: database triggers refuse UPDATE and DELETE (migration 0002), on SQLite and PostgreSQL.
decisions = Table(
    "decisions", metadata,
    Column("id", Integer, primary_key=True),
    Column("label_id", Integer, ForeignKey("labels.id"), nullable=False),
    Column("user_name", String(100), nullable=False),
    Column("action", String(20), nullable=False),  # approve|correct|reject|skip|undo
    Column("from_state", String(20), nullable=False),
    Column("to_state", String(20), nullable=False),
    Column("before", JSON),  # effective judged label before: labels.final, or the proposal
    Column("after", JSON),  # labels.final after
    Column("note", Text),
    Column("undoes_id", Integer, ForeignKey("decisions.id")),
    Column("label_version", Integer, nullable=False),  # labels.version this decision produced
    Column("idempotency_key", String(100), unique=True),  # from the form: a double submit finds it
    Column("created_at", TS, nullable=False),
)
Index("ix_decisions_label_id", decisions.c.label_id)
Index("ix_decisions_user_name", decisions.c.user_name, decisions.c.id)

# --- 0003 ledger and alerts (stage 7) ---------------------------------------------------------

# Every probability an editor applied: who, when, from, to, why. Nothing writes here but a person.
probability_history = Table(
    "probability_history", metadata,
    Column("id", Integer, primary_key=True),
    Column("thesis_id", String(100), nullable=False),
    Column("from_probability", Float, nullable=False),
    Column("to_probability", Float, nullable=False),
    Column("suggested_probability", Float),  # the ledger's suggestion when it was applied
    Column("user_name", String(100), nullable=False),
    Column("note", Text, nullable=False, default=""),
    Column("evidence", JSON, nullable=False, default=list),  # label ids the suggestion counted
    Column("created_at", TS, nullable=False),
)
Index("ix_probability_history_thesis", probability_history.c.thesis_id,
      probability_history.c.created_at)

# Webhook outbox: one row per event, written in the transaction that caused it and delivered
# after it commits, so a slow or dead receiver never holds up labeling or review.
webhook_events = Table(
    "webhook_events", metadata,
    Column("id", Integer, primary_key=True),
    Column("msg_id", String(64), nullable=False, unique=True),  # Standard Webhooks webhook-id
    Column("type", String(40), nullable=False),  # trigger.candidate|trigger.approved|test
    Column("label_id", Integer, ForeignKey("labels.id")),
    Column("thesis_id", String(100)),
    Column("url", Text),  # only this receiver (tests); null: every receiver subscribed to type
    Column("payload", JSON, nullable=False),
    Column("state", String(20), nullable=False, default="pending"),  # pending|delivered|failed
    Column("claim_until", TS),
    Column("created_at", TS, nullable=False),
    Column("finished_at", TS),
)
Index("ix_webhook_events_state", webhook_events.c.state)

# Every delivery attempt of an event to a receiver, failed ones too.
webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("webhook_events.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("latency_ms", Float, nullable=False, default=0.0),
    Column("next_attempt_at", TS),  # null: delivered, or no attempts left
    Column("created_at", TS, nullable=False),
)
Index("ix_webhook_deliveries_event", webhook_deliveries.c.event_id)
