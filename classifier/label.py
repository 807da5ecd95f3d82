"""Stage 5, label: (article, thesis) pairs in state 'pending' → checked labels queued for review.

    label_article   one article × one thesis → LabelOutcome (label, meta, every attempt)   [pure]
    label_pair      one stored pair → labels row + llm_calls rows, or pair 'failed'      [worker]
    label_pending   the batch loop over pending pairs, with --limit/--thesis/--budget     [run]
    plan            what label_pending would send (for --dry-run), without calling a model
    history         an article's labels and LLM calls per thesis (for `evidence show`)

Outcomes per pair: 'labeled' (labels row, review_state 'pending'); 'failed' (answer invalid or
ungrounded after the re-asks: error_type, error_detail and the last raw answer on the pair, and
a skips row); transport failure after retries: the pair stays 'pending' with error_type and
error_detail set, so the next run tries again (after `stop_after_transport_failures` in a row the
run stops). Every attempt is an llm_calls row. The cache key (text SHA-256, thesis hash, prompt
hash, schema hash, backend:model) is unique in labels: a labeled pair is never sent again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, insert, or_, select, update

from classifier import alerts
from classifier.answer import answer_schema
from classifier.backends.base import (
    Backend,
    CallRecord,
    LabelRequest,
    backend_price,
    cost_of,
    price_of,
)
from classifier.combine.provenance import disagreement
from classifier.config import LabelSettings, ThesesFile, ThesisConfig
from classifier.errors import (
    BackendUnavailable,
    BudgetExceeded,
    ConfigError,
    LabelingFailed,
    TransportError,
)
from classifier.prompt import Prompt, estimate_tokens, render, schema_hash
from classifier.records import Label, LabelMeta, Record, SkipReason, Stage
from classifier.store.engine import as_utc, utcnow, write
from classifier.store.tables import articles, labels, llm_calls, pairs, skips


@dataclass(frozen=True)
class LabelOutcome:
    """A checked label, how it was made, and every attempt it took."""

    label: Label
    meta: LabelMeta
    calls: list[CallRecord] = field(default_factory=list)


class LabelCounts(Record):
    """What one labeling pass did."""

    selected: int = 0
    labeled: int = 0
    failed: int = 0
    deferred: int = 0  # transport failure: still pending
    cached: int = 0  # a label with the same cache key existed: no call
    llm_skipped: int = 0  # combined labeler: pairs the policy kept from the LLM ([label] llm)
    unknown_thesis: int = 0  # the pair's thesis is not in the theses file: left pending
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost_usd: float = 0.0
    stopped: str | None = None  # why the pass stopped early (budget, backend, transport)


def model_id(backend: Backend) -> str:
    """Backend → "name:model", the model part of cache keys."""
    return f"{backend.name}:{backend.model}"


def cache_key(text_sha256: str, thesis_hash: str, prompt_hash: str, schema_hash_: str,
              model: str) -> str:
    """(text SHA-256, thesis hash, prompt hash, schema hash, backend:model) → SHA-256 key."""
    raw = json.dumps([text_sha256, thesis_hash, prompt_hash, schema_hash_, model])
    return hashlib.sha256(raw.encode()).hexdigest()


def build_request(thesis: ThesisConfig, *, title: str, text: str, source: str | None = None,
                  published: datetime | str | None = None,
                  settings: LabelSettings | None = None,
                  delimiter_key: str | None = None) -> tuple[Prompt, LabelRequest]:
    """Thesis + article → (rendered prompt, backend request with schema and hashes);
    `delimiter_key` makes the spotlighting code repeatable (eval only, see prompt.new_delimiter)."""
    settings = settings or LabelSettings()
    pub = published.isoformat() if isinstance(published, datetime) else published
    prompt = render(thesis, title=title, text=text, source=source, published=pub,
                    max_article_tokens=settings.max_article_tokens, delimiter_key=delimiter_key)
    schema = answer_schema(thesis)
    return prompt, LabelRequest(messages=prompt.messages, thesis=thesis, schema=schema, text=text,
                                prompt_hash=prompt.prompt_hash, schema_hash=schema_hash(schema),
                                max_reasks=settings.max_reasks,
                                max_tokens=settings.max_output_tokens, title=title)


def label_article(backend: Backend, thesis: ThesisConfig, *, title: str, text: str,
                  source: str | None = None, published: datetime | str | None = None,
                  settings: LabelSettings | None = None,
                  delimiter_key: str | None = None) -> LabelOutcome:
    """Article + thesis → LabelOutcome; raises LabelingFailed / TransportError with `.calls` attached."""
    _, request = build_request(thesis, title=title, text=text, source=source, published=published,
                               settings=settings, delimiter_key=delimiter_key)
    calls: list[CallRecord] = []
    started = time.perf_counter()
    try:
        label = backend.label(request, calls.append)
    except (LabelingFailed, TransportError, BackendUnavailable) as e:
        e.calls = calls  # type: ignore[attr-defined]
        raise
    except Exception as e:  # noqa: BLE001  a backend bug or an SDK surprise: typed, attempts kept
        err = TransportError(f"{type(e).__name__}: {e}", error_type=type(e).__name__,
                             attempts=len(calls))
        err.calls = calls  # type: ignore[attr-defined]
        raise err from e
    meta = LabelMeta(backend=backend.name, model=backend.model, prompt_hash=request.prompt_hash,
                     schema_hash=request.schema_hash, thesis_hash=thesis.content_hash,
                     tokens_in=sum(c.tokens_in for c in calls),
                     tokens_out=sum(c.tokens_out for c in calls),
                     cost_usd=sum(c.cost_usd for c in calls),
                     latency_ms=(time.perf_counter() - started) * 1000, attempts=len(calls))
    return LabelOutcome(label=label, meta=meta, calls=calls)


# ---------------------------------------------------------------------------------------------
# Stored pairs
# ---------------------------------------------------------------------------------------------

_PAIR_COLS = (pairs.c.id, pairs.c.article_id, pairs.c.thesis_id, articles.c.title, articles.c.text,
              articles.c.text_sha256, articles.c.site_name, articles.c.url, articles.c.published)


@dataclass(frozen=True)
class PairRow:
    """A pending pair joined with its article."""

    id: int
    article_id: int
    thesis_id: str
    title: str
    text: str
    text_sha256: str
    site_name: str | None
    url: str
    published: datetime | None


def _pending_query(thesis_id: str | None, limit: int | None, now: datetime) -> Any:
    q = (select(*_PAIR_COLS).join(articles, articles.c.id == pairs.c.article_id)
         .where(pairs.c.state == "pending")
         # a pair a worker holds under a live lease is the worker's
         .where(or_(pairs.c.claimed_by.is_(None), pairs.c.lease_until.is_(None),
                    pairs.c.lease_until < now))
         .order_by(pairs.c.thesis_id, pairs.c.id))  # same thesis in a row: longer cached prefix
    if thesis_id:
        q = q.where(pairs.c.thesis_id == thesis_id)
    return q.limit(limit) if limit else q


def pending_pairs(conn: Connection, *, thesis_id: str | None = None,
                  limit: int | None = None) -> list[PairRow]:
    """Connection → pending pairs (with article text), thesis by thesis, oldest first."""
    rows = conn.execute(_pending_query(thesis_id, limit, utcnow())).all()
    return [PairRow(*r[:8], as_utc(r[8])) for r in rows]


def _source(row: PairRow) -> str | None:
    if row.site_name:
        return row.site_name
    from urllib.parse import urlsplit
    return urlsplit(row.url).hostname


def _call_row(c: CallRecord, *, pair_id: int, key: str) -> dict[str, Any]:
    return {"pair_id": pair_id, "cache_key": key, "created_at": c.created_at, "backend": c.backend,
            "model": c.model, "prompt_hash": c.prompt_hash, "schema_hash": c.schema_hash,
            "request": c.request, "response": c.response, "tokens_in": c.tokens_in,
            "tokens_out": c.tokens_out, "cost_usd": c.cost_usd, "latency_ms": c.latency_ms,
            "attempt": c.attempt, "error_type": c.error_type, "error_detail": c.error_detail}


@dataclass(frozen=True)
class PairResult:
    """What happened to one pair: 'labeled' | 'cached' | 'failed' | 'deferred' | 'gone'."""

    outcome: str
    calls: list[CallRecord] = field(default_factory=list)
    label_id: int | None = None
    error_type: str | None = None
    llm_skipped: bool = False  # combined labeler: the LLM was not asked for this pair

    @property
    def cost_usd(self) -> float:
        return sum(c.cost_usd for c in self.calls)


def label_row(engine: Engine, row: PairRow, thesis: ThesisConfig, backend: Backend, *,
              settings: LabelSettings | None = None,
              guard: Callable[[Connection], None] | None = None) -> PairResult:
    """One pending pair → labeled / failed / deferred, stored (labels, llm_calls, pairs, skips).

    `guard(conn)` runs first in every write transaction (the worker's lease check: it raises
    errors.LeaseLost to refuse a late result, and nothing of this pair is written)."""
    settings = settings or LabelSettings()
    prompt, request = build_request(thesis, title=row.title, text=row.text, source=_source(row),
                                    published=row.published, settings=settings)
    key = cache_key(row.text_sha256, thesis.content_hash, request.prompt_hash,
                    request.schema_hash, model_id(backend))
    with engine.connect() as conn:
        hit = conn.execute(select(labels.c.id).where(labels.c.cache_key == key)).scalar()
    if hit is not None:
        with write(engine) as conn:
            _guard(conn, guard)
            _set_pair(conn, row.id, "labeled")
        return PairResult("cached", label_id=hit)
    try:
        outcome = label_article(backend, thesis, title=row.title, text=row.text,
                                source=_source(row), published=row.published, settings=settings)
    except LabelingFailed as e:
        calls = e.calls  # type: ignore[attr-defined]
        with write(engine) as conn:
            _guard(conn, guard)
            _store_calls(conn, calls, row.id, key)
            _set_pair(conn, row.id, "failed", error_type=e.error_type, error_detail=str(e),
                      last_raw=e.last_raw)
            conn.execute(insert(skips).values(
                kind="failure", stage=Stage.LABEL.value, reason=e.error_type, detail=str(e)[:2000],
                article_id=row.article_id, thesis_id=row.thesis_id, created_at=utcnow()))
        return PairResult("failed", calls, error_type=e.error_type)
    except TransportError as e:
        calls = e.calls  # type: ignore[attr-defined]
        with write(engine) as conn:
            _guard(conn, guard)
            _store_calls(conn, calls, row.id, key)
            _set_pair(conn, row.id, "pending", error_type=e.error_type, error_detail=str(e))
        return PairResult("deferred", calls, error_type=e.error_type)
    label, meta = outcome.label, outcome.meta
    with write(engine) as conn:
        _guard(conn, guard)
        _store_calls(conn, outcome.calls, row.id, key)
        if conn.execute(select(labels.c.id).where(labels.c.cache_key == key)).scalar() is not None:
            _set_pair(conn, row.id, "labeled")  # another worker won the race
            return PairResult("cached", outcome.calls)
        label_id = conn.execute(insert(labels).values(
            pair_id=row.id, article_id=row.article_id, thesis_id=row.thesis_id, cache_key=key,
            relevant=label.relevant,
            evidence_type=label.evidence_type.value if label.evidence_type else None,
            direction=label.direction.value if label.direction else None,
            strength=label.strength.value if label.strength else None,
            confidence=label.confidence, rationale=label.rationale, quotes=list(label.quotes),
            trigger=label.trigger, backend=meta.backend, model=meta.model,
            prompt_hash=meta.prompt_hash, schema_hash=meta.schema_hash,
            thesis_hash=meta.thesis_hash, tokens_in=meta.tokens_in, tokens_out=meta.tokens_out,
            cost_usd=meta.cost_usd, latency_ms=meta.latency_ms, attempts=meta.attempts,
            review_state="pending", version=1, created_at=utcnow(),
            proposals=label.proposals, disagreement=disagreement(label.proposals),
            encoder_version=getattr(backend, "encoder_version", None))).inserted_primary_key[0]
        # a trigger candidate → a webhook event in this transaction, POSTed after commit
        alerts.on_label_queued(conn, label_id, thesis=thesis)
        _set_pair(conn, row.id, "labeled")
    skipped = bool(label.proposals) and label.proposals.get("llm_status") == "skipped"
    return PairResult("labeled", outcome.calls, label_id=label_id, llm_skipped=skipped)


def _guard(conn: Connection, guard: Callable[[Connection], None] | None) -> None:
    if guard is not None:
        guard(conn)


def _store_calls(conn: Connection, calls: list[CallRecord], pair_id: int, key: str) -> None:
    if calls:
        conn.execute(insert(llm_calls), [_call_row(c, pair_id=pair_id, key=key) for c in calls])


def _set_pair(conn: Connection, pair_id: int, state: str, *, error_type: str | None = None,
              error_detail: str | None = None, last_raw: str | None = None) -> None:
    conn.execute(update(pairs).where(pairs.c.id == pair_id).values(
        state=state, error_type=error_type, error_detail=(error_detail or None) and error_detail[:4000],
        last_raw=last_raw, claimed_by=None, lease_until=None, updated_at=utcnow()))


def label_pair(engine: Engine, pair_id: int, theses: ThesesFile, backend: Backend, *,
               settings: LabelSettings | None = None,
               guard: Callable[[Connection], None] | None = None) -> PairResult:
    """Pair id → PairResult; a pair no longer pending is 'gone' (someone else finished it)."""
    with engine.connect() as conn:
        r = conn.execute(select(*_PAIR_COLS).join(articles, articles.c.id == pairs.c.article_id)
                         .where(and_(pairs.c.id == pair_id, pairs.c.state == "pending"))).first()
    if r is None:
        return PairResult("gone")
    row = PairRow(*r[:8], as_utc(r[8]))
    return label_row(engine, row, _thesis(theses, row), backend, settings=settings, guard=guard)


def _thesis(theses: ThesesFile, row: PairRow) -> ThesisConfig:
    try:
        return theses.get(row.thesis_id)
    except ConfigError as e:
        raise ConfigError(f"pair {row.id} names thesis {row.thesis_id!r}, which the theses file "
                          f"no longer has; add it back or delete its pairs") from e


def label_pending(engine: Engine, theses: ThesesFile, backend: Backend, *,
                  limit: int | None = None, thesis_id: str | None = None,
                  budget_usd: float | None = None, settings: LabelSettings | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> LabelCounts:
    """Pending pairs → labels; stops cleanly at the budget or when the backend is down.

    progress("label", done, total) is called as pairs finish (the pipeline's progress shape).
    """
    settings = settings or LabelSettings()
    price = backend_price(backend, settings.prices)
    if budget_usd is not None and price is None:
        raise ConfigError(f"no price known for model {backend.model!r}, so --budget cannot be "
                          f"enforced; add it under [label.prices] in evidence.toml")
    with engine.connect() as conn:
        rows = pending_pairs(conn, thesis_id=thesis_id, limit=limit)
    counts: dict[str, Any] = {"selected": len(rows)}
    if progress:
        progress("label", 0, len(rows))
    spent = 0.0
    transport_in_a_row = 0
    known = {t.id for t in theses.thesis}
    for i, row in enumerate(rows):
        if row.thesis_id not in known:  # thesis gone from the file: the pair waits, counted
            counts["unknown_thesis"] = counts.get("unknown_thesis", 0) + 1
            continue
        thesis = theses.get(row.thesis_id)
        if budget_usd is not None:
            est = estimate_cost(row, thesis, settings, price)
            if spent + est > budget_usd:
                counts["stopped"] = (f"budget: spent ${spent:.4f} of ${budget_usd:.4f}; the next pair "
                                     f"would cost about ${est:.4f}; {len(rows) - i} pairs left pending")
                with write(engine) as conn:
                    conn.execute(insert(skips).values(
                        kind="skip", stage=Stage.LABEL.value, reason=SkipReason.BUDGET.value,
                        detail=counts["stopped"], created_at=utcnow()))
                break
        try:
            result = label_row(engine, row, thesis, backend, settings=settings)
        except BackendUnavailable as e:
            counts["stopped"] = f"backend unavailable: {e}; {len(rows) - i} pairs left pending"
            break
        spent += result.cost_usd
        key = {"labeled": "labeled", "cached": "cached", "failed": "failed",
               "deferred": "deferred"}.get(result.outcome)
        if key:
            counts[key] = counts.get(key, 0) + 1
        counts["llm_skipped"] = counts.get("llm_skipped", 0) + result.llm_skipped
        counts["calls"] = counts.get("calls", 0) + len(result.calls)
        counts["tokens_in"] = counts.get("tokens_in", 0) + sum(c.tokens_in for c in result.calls)
        counts["tokens_out"] = counts.get("tokens_out", 0) + sum(c.tokens_out for c in result.calls)
        counts["cost_usd"] = spent
        if progress:
            progress("label", i + 1, len(rows))
        transport_in_a_row = transport_in_a_row + 1 if result.outcome == "deferred" else 0
        if transport_in_a_row >= settings.stop_after_transport_failures:
            counts["stopped"] = (f"backend failing: {transport_in_a_row} pairs in a row hit "
                                 f"transport errors ({result.error_type}); "
                                 f"{len(rows) - i - 1} pairs left pending")
            break
    return LabelCounts(**counts)


# ---------------------------------------------------------------------------------------------
# Dry run and history
# ---------------------------------------------------------------------------------------------


def estimate_cost(row: PairRow, thesis: ThesisConfig, settings: LabelSettings,
                  price: tuple[float, float] | None) -> float:
    """Pair → worst-case USD of one attempt (estimated prompt + max output tokens)."""
    prompt, _ = build_request(thesis, title=row.title, text=row.text, settings=settings)
    tokens_in = sum(estimate_tokens(m["content"]) for m in prompt.messages)
    return cost_of(tokens_in, settings.max_output_tokens, price)


@dataclass(frozen=True)
class Plan:
    """What `evidence label` would do: pairs, one rendered prompt, tokens and cost estimates."""

    backend: str
    model: str
    pairs: list[dict[str, Any]]
    example: Prompt | None
    tokens_in: int
    tokens_out_max: int
    cost_usd: float
    price: tuple[float, float] | None


def plan(engine: Engine, theses: ThesesFile, backend_name: str, model: str, *,
         limit: int | None = None, thesis_id: str | None = None,
         settings: LabelSettings | None = None) -> Plan:
    """Pending pairs → Plan with estimated tokens (chars/4) and cost; calls no model."""
    settings = settings or LabelSettings()
    price = price_of(model, backend_name, settings.prices)
    with engine.connect() as conn:
        rows = pending_pairs(conn, thesis_id=thesis_id, limit=limit)
    listed, example, total_in = [], None, 0
    for row in rows:
        prompt, _ = build_request(_thesis(theses, row), title=row.title, text=row.text,
                                  source=_source(row), published=row.published, settings=settings)
        example = example or prompt
        tokens = sum(estimate_tokens(m["content"]) for m in prompt.messages)
        total_in += tokens
        listed.append({"pair_id": row.id, "thesis": row.thesis_id, "article_id": row.article_id,
                       "title": row.title, "tokens_in_est": tokens, "trimmed": prompt.trimmed})
    out_max = settings.max_output_tokens * len(rows)
    return Plan(backend=backend_name, model=model, pairs=listed, example=example,
                tokens_in=total_in, tokens_out_max=out_max,
                cost_usd=cost_of(total_in, out_max, price), price=price)


def history(conn: Connection, article_id: int) -> list[dict[str, Any]]:
    """Article id → per thesis: pair state, latest label (fields, quotes, meta) and its LLM calls."""
    out = []
    prs = conn.execute(select(pairs).where(pairs.c.article_id == article_id)
                       .order_by(pairs.c.thesis_id)).mappings().all()
    for p in prs:
        lab = conn.execute(select(labels).where(labels.c.pair_id == p["id"])
                           .order_by(labels.c.id.desc()).limit(1)).mappings().first()
        calls = conn.execute(select(
            llm_calls.c.id, llm_calls.c.created_at, llm_calls.c.backend, llm_calls.c.model,
            llm_calls.c.attempt, llm_calls.c.tokens_in, llm_calls.c.tokens_out,
            llm_calls.c.cost_usd, llm_calls.c.latency_ms, llm_calls.c.error_type,
            llm_calls.c.error_detail).where(llm_calls.c.pair_id == p["id"])
            .order_by(llm_calls.c.id)).mappings().all()
        out.append({
            "thesis": p["thesis_id"], "pair_id": p["id"], "state": p["state"],
            "route_score": p["route_score"], "error_type": p["error_type"],
            "error_detail": p["error_detail"], "last_raw": p["last_raw"],
            "label": None if lab is None else {
                k: lab[k] for k in ("id", "relevant", "evidence_type", "direction", "strength",
                                    "trigger", "confidence", "rationale", "quotes", "review_state",
                                    "backend", "model", "prompt_hash", "schema_hash", "tokens_in",
                                    "tokens_out", "cost_usd", "latency_ms", "attempts")},
            "calls": [{**dict(c), "created_at": as_utc(c["created_at"])} for c in calls],
        })
    return out


__all__ = ["BudgetExceeded", "LabelCounts", "LabelOutcome", "PairResult", "Plan", "build_request",
           "cache_key", "history", "label_article", "label_pair", "label_pending", "label_row",
           "pending_pairs", "plan"]
