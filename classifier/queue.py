"""Stage 6: the review queue. Labels wait as `pending`; an editor's decision moves them.

    pending ──approve──▶ approved      (final = the proposed judged fields)
            ──correct──▶ corrected     (final = the editor's fields)
            ──reject───▶ rejected      (final = null)
            ──skip─────▶ pending       (a decision row, nothing else changes)
    any decided state ──undo──▶ the state before (itself a new decision row)

Every transition is one row in `decisions`, which is append-only (the database refuses UPDATE and
DELETE on it). Concurrency, the same on SQLite and PostgreSQL:
- an editor claims an item with a short lease (`labels.claimed_by/claim_until`); `claim_next`
  never hands an item held by someone else;
- a form carries `labels.version`; a decision made on an older version is a `Conflict`;
- a form carries an idempotency key; submitting it twice returns the first decision.
Every guard is in the WHERE clause of the UPDATE itself, so two racing writers cannot both pass.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal

from pydantic import Field, ValidationError
from sqlalchemy import Connection, Engine, and_, func, literal_column, or_, select
from sqlalchemy.exc import IntegrityError

from classifier import alerts
from classifier.combine.provenance import differing
from classifier.errors import Conflict, NotFound, ReviewError
from classifier.records import GoldLabel, Record
from classifier.store import write
from classifier.store.engine import as_utc, utcnow
from classifier.store.tables import (
    QUEUE_KEY_CONTESTED,
    QUEUE_KEY_STRENGTH,
    QUEUE_KEY_TRIGGER,
    articles,
    decisions,
    feeds,
    labels,
)

LEASE = timedelta(minutes=5)
SKIP_MEMORY = timedelta(hours=1)  # a skipped item does not come back to the same editor this soon
STATES = ("pending", "approved", "corrected", "rejected")
DECIDED = ("approved", "corrected", "rejected")
ACTIONS = ("approve", "correct", "reject", "skip", "undo")
JUDGED = ("relevant", "evidence_type", "direction", "strength", "trigger")

Action = Literal["approve", "correct", "reject", "skip"]


class QueueFilter(Record):
    """What the queue shows: state (default pending), optional thesis/type/direction/feed/dates,
    whether the two opinions disagree, and the order (review order, or most disagreeing first)."""

    state: Literal["pending", "approved", "corrected", "rejected", "any"] = "pending"
    thesis: str | None = None
    evidence_type: Literal["direct", "circumstantial", "none"] | None = None
    direction: Literal["supports", "undermines", "neutral", "none"] | None = None
    feed: str | None = None
    since: date | None = None  # article published (or stored) on or after this day, UTC
    until: date | None = None  # ... on or before this day
    disagree: Literal["yes", "no"] | None = None  # yes: disagreement >= 1; no: 0 or one opinion
    sort: Literal["review", "disagreement"] = "review"

    @classmethod
    def from_query(cls, params: Mapping[str, str]) -> QueueFilter:
        """Query parameters (empty ones ignored) → QueueFilter, or ReviewError naming the field."""
        data = {k: v for k, v in params.items() if k in cls.model_fields and v not in ("", None)}
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            err = e.errors()[0]
            raise ReviewError(f"bad filter {'.'.join(map(str, err['loc']))}: {err['msg']}") from e

    def to_query(self) -> dict[str, str]:
        """QueueFilter → the query parameters that rebuild it (defaults left out)."""
        data = self.model_dump(exclude_defaults=True)
        return {k: str(v) for k, v in data.items() if v is not None}


class QueueItem(Record):
    """One row of the queue: the label, its article and who holds it."""

    label_id: int
    thesis_id: str
    review_state: str
    version: int
    relevant: bool
    evidence_type: str | None
    direction: str | None
    strength: str | None
    confidence: float
    trigger: str | None
    final: dict[str, Any] | None
    article_id: int
    title: str
    site_name: str | None
    feed: str | None
    published: datetime | None
    claimed_by: str | None
    claim_until: datetime | None
    disagreement: int | None = None  # class fields the two opinions differ on; None: one opinion
    disagree: tuple[str, ...] = ()  # which ones


class Decision(Record):
    """One row of the append-only decisions table."""

    id: int
    label_id: int
    user_name: str
    action: str
    from_state: str
    to_state: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    note: str | None = None
    undoes_id: int | None = None
    label_version: int
    idempotency_key: str | None = None
    created_at: datetime
    replayed: bool = Field(default=False, exclude=True)  # True: a double submit found this row


# ---------------------------------------------------------------------------------------------
# Reading the queue
# ---------------------------------------------------------------------------------------------

_published = func.coalesce(articles.c.published, articles.c.created_at)
# Review order: trigger candidates first, then strength, then disagreeing or undermining
# proposals, then confidence, then the newest queued. The CASE keys are spelled exactly as in the
# expression index ix_labels_queue (migration 0006), so SQLite and PostgreSQL walk that index and
# stop after one page instead of sorting the whole queue.
K_TRIGGER = literal_column(QUEUE_KEY_TRIGGER)
K_STRENGTH = literal_column(QUEUE_KEY_STRENGTH)
K_CONTESTED = literal_column(QUEUE_KEY_CONTESTED)
K_DISAGREEMENT = func.coalesce(labels.c.disagreement, 0)  # sort=disagreement only: no index
REVIEW_KEYS = ((K_TRIGGER, True), (K_STRENGTH, True), (K_CONTESTED, True),
               (labels.c.confidence, False), (labels.c.id, False))  # (expression, ascending)


def _keys(flt: QueueFilter) -> tuple[tuple[Any, bool], ...]:
    """Filter → its order keys: review order, after the disagreement count for sort=disagreement."""
    return ((K_DISAGREEMENT, False), *REVIEW_KEYS) if flt.sort == "disagreement" else REVIEW_KEYS


def _order(keys: tuple[tuple[Any, bool], ...], *, reverse: bool = False) -> list[Any]:
    return [expr.asc() if ascending != reverse else expr.desc() for expr, ascending in keys]


ORDER = tuple(_order(REVIEW_KEYS))


def _where(flt: QueueFilter) -> list[Any]:
    conds: list[Any] = []
    if flt.state != "any":
        conds.append(labels.c.review_state == flt.state)
    if flt.thesis:
        conds.append(labels.c.thesis_id == flt.thesis)
    if flt.evidence_type:
        conds.append(labels.c.evidence_type.is_(None) if flt.evidence_type == "none"
                     else labels.c.evidence_type == flt.evidence_type)
    if flt.direction:
        conds.append(labels.c.direction.is_(None) if flt.direction == "none"
                     else labels.c.direction == flt.direction)
    if flt.feed:
        conds.append(feeds.c.name == flt.feed)
    if flt.since:
        conds.append(_published >= datetime.combine(flt.since, time.min, tzinfo=UTC))
    if flt.until:
        day_after = flt.until + timedelta(days=1)
        conds.append(_published < datetime.combine(day_after, time.min, tzinfo=UTC))
    if flt.disagree:
        conds.append(labels.c.disagreement >= 1 if flt.disagree == "yes" else
                     or_(labels.c.disagreement == 0, labels.c.disagreement.is_(None)))
    return conds


def _item_columns() -> list[Any]:
    return [labels.c.id.label("label_id"), labels.c.thesis_id, labels.c.review_state,
            labels.c.version, labels.c.relevant, labels.c.evidence_type, labels.c.direction,
            labels.c.strength, labels.c.confidence, labels.c.trigger, labels.c.final,
            labels.c.article_id, articles.c.title, articles.c.site_name,
            feeds.c.name.label("feed"), _published.label("published"), labels.c.claimed_by,
            labels.c.claim_until, labels.c.disagreement, labels.c.proposals]


def _joined() -> Any:
    return labels.join(articles, articles.c.id == labels.c.article_id).outerjoin(
        feeds, feeds.c.id == articles.c.feed_id)


def _from(flt: QueueFilter) -> Any:
    # join only what the filter needs: ordering and most filters read labels alone
    if flt.feed:
        return labels.join(articles, articles.c.id == labels.c.article_id).join(
            feeds, feeds.c.id == articles.c.feed_id)
    if flt.since or flt.until:
        return labels.join(articles, articles.c.id == labels.c.article_id)
    return labels


def _items(conn: Connection, ids: list[int]) -> list[QueueItem]:
    if not ids:
        return []
    rows = conn.execute(select(*_item_columns()).select_from(_joined())
                        .where(labels.c.id.in_(ids))).all()
    by_id = {r.label_id: _item(r) for r in rows}
    return [by_id[i] for i in ids if i in by_id]


def _item(row: Any) -> QueueItem:
    d = dict(row._mapping)
    d["published"], d["claim_until"] = as_utc(d["published"]), as_utc(d["claim_until"])
    p = d.pop("proposals") or {}
    d["disagree"] = tuple(p.get("disagree") or differing(p.get("encoder"), p.get("llm")))
    return QueueItem(**d)


def list_queue(conn: Connection, flt: QueueFilter, *, limit: int = 50, offset: int = 0,
               count_limit: int | None = None) -> tuple[list[QueueItem], int]:
    """Filter, page → (the page of queue items in review order, the total that match).

    With `count_limit`, counting stops there (the total is then "at least count_limit"): a page
    header need not count a long queue to the end.
    """
    conds = _where(flt)
    matching = select(labels.c.id).select_from(_from(flt)).where(*conds)
    if count_limit is not None:
        matching = matching.limit(count_limit)
    total = conn.execute(select(func.count()).select_from(matching.subquery())).scalar_one()
    ids = conn.execute(select(labels.c.id).select_from(_from(flt)).where(*conds)
                       .order_by(*_order(_keys(flt))).limit(limit).offset(offset)).scalars().all()
    return _items(conn, list(ids)), total


def get_item(conn: Connection, label_id: int) -> QueueItem:
    """Label id → its queue item, or NotFound."""
    row = conn.execute(select(*_item_columns()).select_from(_joined())
                       .where(labels.c.id == label_id)).first()
    if row is None:
        raise NotFound(f"no label {label_id}")
    return _item(row)


def _after(keys: tuple[tuple[Any, bool], ...], key: Any, *, reverse: bool) -> Any:
    """Order keys, one label's values of them → a condition for the labels after it (before:
    reverse)."""
    cond = None
    for (expr, ascending), value in reversed(list(zip(keys, key, strict=True))):
        later = (expr > value) if ascending != reverse else (expr < value)
        cond = later if cond is None else or_(later, and_(expr == value, cond))
    return cond


def neighbours(conn: Connection, flt: QueueFilter, label_id: int) -> tuple[int | None, int | None]:
    """Filter, label id → (previous, next) label ids in the filter's order (None at either end)."""
    keys = _keys(flt)
    key = conn.execute(select(*(expr for expr, _ in keys)).where(labels.c.id == label_id)).first()
    if key is None:
        raise NotFound(f"no label {label_id}")
    base = select(labels.c.id).select_from(_from(flt)).where(*_where(flt))
    nxt = conn.execute(base.where(_after(keys, key, reverse=False)).order_by(*_order(keys))
                       .limit(1)).scalar()
    prev = conn.execute(base.where(_after(keys, key, reverse=True))
                        .order_by(*_order(keys, reverse=True)).limit(1)).scalar()
    return prev, nxt


def history(conn: Connection, *, label_id: int | None = None, user: str | None = None,
            limit: int = 100, before_id: int | None = None) -> list[Decision]:
    """Optional label/user/cursor → decisions, newest first."""
    q = select(decisions).order_by(decisions.c.id.desc()).limit(limit)
    if label_id is not None:
        q = q.where(decisions.c.label_id == label_id)
    if user is not None:
        q = q.where(decisions.c.user_name == user)
    if before_id is not None:
        q = q.where(decisions.c.id < before_id)
    return [_decision(r) for r in conn.execute(q).all()]


def _decision(row: Any, *, replayed: bool = False) -> Decision:
    d = dict(row._mapping)
    d["created_at"] = as_utc(d["created_at"])
    return Decision(**d, replayed=replayed)


# ---------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------


def _free_for(user: str, now: datetime) -> Any:
    return or_(labels.c.claimed_by.is_(None), labels.c.claimed_by == user,
               labels.c.claim_until < now)


def _try_claim(engine: Engine, label_id: int, user: str, lease: timedelta) -> bool:
    now = utcnow()
    with write(engine) as conn:
        got = conn.execute(
            labels.update().where(labels.c.id == label_id, labels.c.review_state == "pending",
                                  _free_for(user, now))
            .values(claimed_by=user, claim_until=now + lease)).rowcount
        if got:  # one item at a time: claiming releases the editor's other claims
            conn.execute(labels.update().where(labels.c.claimed_by == user, labels.c.id != label_id)
                         .values(claimed_by=None, claim_until=None))
    return bool(got)


def claim(engine: Engine, label_id: int, user: str, *, lease: timedelta = LEASE) -> str | None:
    """Label id, editor → None if the editor may work on it now, else the editor who holds it.

    A pending item is claimed (lease renewed if already theirs); a decided item is not claimed.
    """
    if _try_claim(engine, label_id, user, lease):
        return None
    with engine.connect() as conn:
        row = conn.execute(select(labels.c.claimed_by, labels.c.claim_until, labels.c.review_state)
                           .where(labels.c.id == label_id)).first()
    if row is None:
        raise NotFound(f"no label {label_id}")
    if row.review_state != "pending":
        return None
    return row.claimed_by


def claim_next(engine: Engine, user: str, flt: QueueFilter | None = None, *,
               exclude: tuple[int, ...] = (), lease: timedelta = LEASE) -> int | None:
    """Editor, filter → id of the first pending item in review order now claimed by them, or None.

    Skips items another editor holds and items this editor skipped within SKIP_MEMORY. Tries the
    next candidate when a racing editor wins one (the UPDATE's WHERE re-checks the claim).
    """
    flt = (flt or QueueFilter()).model_copy(update={"state": "pending"})
    for _ in range(20):
        now = utcnow()
        skipped = select(decisions.c.label_id).where(
            decisions.c.user_name == user, decisions.c.action == "skip",
            decisions.c.created_at > now - SKIP_MEMORY)
        conds = [*_where(flt), _free_for(user, now), labels.c.id.not_in(skipped)]
        if exclude:
            conds.append(labels.c.id.not_in(exclude))
        with engine.connect() as conn:
            ids = conn.execute(select(labels.c.id).select_from(_from(flt)).where(*conds)
                               .order_by(*_order(_keys(flt))).limit(5)).scalars().all()
        if not ids:
            return None
        for label_id in ids:
            if _try_claim(engine, label_id, user, lease):
                return label_id
    return None


def release(engine: Engine, user: str) -> int:
    """Editor → number of claims they held, now released (logout, leaving the desk)."""
    with write(engine) as conn:
        return conn.execute(labels.update().where(labels.c.claimed_by == user)
                            .values(claimed_by=None, claim_until=None)).rowcount


# ---------------------------------------------------------------------------------------------
# Decisions
# ---------------------------------------------------------------------------------------------


def proposed(row: Any) -> dict[str, Any]:
    """A labels row → its proposed judged fields as a dict."""
    m = row._mapping
    return {k: m[k] for k in JUDGED}


def _replay(engine: Engine, key: str | None, user: str) -> Decision | None:
    if not key:
        return None
    with engine.connect() as conn:
        row = conn.execute(select(decisions).where(decisions.c.idempotency_key == key)).first()
    if row is None:
        return None
    if row.user_name != user:
        raise Conflict("this form was already submitted by another user")
    return _decision(row, replayed=True)


def decide(engine: Engine, label_id: int, *, user: str, action: Action, version: int,
           key: str | None = None, fields: Mapping[str, Any] | None = None,
           note: str | None = None, lease: timedelta = LEASE) -> Decision:
    """Label id, editor, action, the version the form showed → the decision row written.

    `correct` needs `fields` (the judged fields; validated like gold labels); a correction equal to
    the proposal is recorded as `approve`. Raises Conflict (stale version, held by another editor),
    NotFound, ReviewError (invalid fields, skipping a decided item). A repeated `key` returns the
    first decision (`.replayed` is True) and writes nothing.
    """
    if action not in ("approve", "correct", "reject", "skip"):
        raise ReviewError(f"unknown action {action!r}")
    note = (note or "").strip() or None
    new_final: dict[str, Any] | None = None
    if action == "correct":
        try:
            new_final = GoldLabel.model_validate(dict(fields or {})).model_dump(mode="json")
        except ValidationError as e:
            raise ReviewError("; ".join(err["msg"].removeprefix("Value error, ")
                                        for err in e.errors())) from e
    if (done := _replay(engine, key, user)) is not None:
        return done
    now = utcnow()
    try:
        with write(engine) as conn:
            row = conn.execute(select(labels).where(labels.c.id == label_id)).first()
            if row is None:
                raise NotFound(f"no label {label_id}")
            _check_fresh(row, version=version, user=user, now=now)
            before = row.final if row.final is not None else proposed(row)
            from_state = row.review_state
            if action == "skip":
                if from_state != "pending":
                    raise ReviewError(f"only pending items can be skipped; this one is "
                                      f"{from_state}")
                to_state, after = "pending", row.final
            elif action == "approve":
                to_state, after = "approved", proposed(row)
            elif action == "reject":
                to_state, after = "rejected", None
            else:
                to_state, after = "corrected", new_final
                if new_final == proposed(row):
                    action, to_state = "approve", "approved"
            changed = conn.execute(
                labels.update().where(labels.c.id == label_id, labels.c.version == version,
                                      _free_for(user, now))
                .values(review_state=to_state, final=after, version=version + 1,
                        claimed_by=None, claim_until=None)).rowcount
            if not changed:  # a racing writer committed between our read and this update
                raise Conflict(f"label {label_id} changed while you were deciding; reload it")
            new_id = conn.execute(decisions.insert().values(
                label_id=label_id, user_name=user, action=action, from_state=from_state,
                to_state=to_state, before=before, after=after, note=note,
                label_version=version + 1, idempotency_key=key,
                created_at=now)).inserted_primary_key[0]
            # an approved trigger candidate → a webhook event in this transaction, sent after commit
            alerts.on_label_decided(conn, label_id)
            out = conn.execute(select(decisions).where(decisions.c.id == new_id)).one()
        return _decision(out)
    except (Conflict, IntegrityError):
        # A double submit racing its twin loses the version check or the unique key: answer
        # with the twin's decision when there is one.
        if (done := _replay(engine, key, user)) is not None:
            return done
        raise


def _check_fresh(row: Any, *, version: int, user: str, now: datetime) -> None:
    holder, until = row.claimed_by, as_utc(row.claim_until)
    if row.version != version:
        raise Conflict(f"label {row.id} changed since your form was shown (your version {version}, "
                       f"now {row.version}); reload it to see the latest decision")
    if holder and holder != user and until is not None and until >= now:
        raise Conflict(f"{holder} is reviewing label {row.id} until {until:%H:%M:%S} UTC")


def undo_last(engine: Engine, *, user: str, key: str | None = None,
              lease: timedelta = LEASE) -> Decision:
    """Editor → the `undo` decision that restored the state before their latest live decision.

    The undone item goes back to its earlier state (usually pending) and is claimed by the editor.
    Raises NotFound (nothing to undo) or Conflict (someone decided the item since).
    """
    if (done := _replay(engine, key, user)) is not None:
        return done
    now = utcnow()
    undone = select(decisions.c.undoes_id).where(decisions.c.undoes_id.is_not(None))
    try:
        with write(engine) as conn:
            last = conn.execute(
                select(decisions).where(decisions.c.user_name == user,
                                        decisions.c.action.in_(("approve", "correct", "reject")),
                                        decisions.c.id.not_in(undone))
                .order_by(decisions.c.id.desc()).limit(1)).first()
            if last is None:
                raise NotFound("you have no decision left to undo")
            row = conn.execute(select(labels).where(labels.c.id == last.label_id)).one()
            if row.version != last.label_version:
                raise Conflict(f"label {row.id} was decided again after your decision; "
                               "undo is only possible while yours is the latest")
            restored = last.before if last.from_state in ("approved", "corrected") else None
            changed = conn.execute(
                labels.update().where(labels.c.id == row.id, labels.c.version == row.version)
                .values(review_state=last.from_state, final=restored, version=row.version + 1,
                        claimed_by=user if last.from_state == "pending" else None,
                        claim_until=now + lease if last.from_state == "pending" else None)).rowcount
            if not changed:
                raise Conflict(f"label {row.id} changed while undoing; reload it")
            if last.from_state == "pending":  # one claim at a time
                conn.execute(labels.update().where(labels.c.claimed_by == user,
                                                   labels.c.id != row.id)
                             .values(claimed_by=None, claim_until=None))
            new_id = conn.execute(decisions.insert().values(
                label_id=row.id, user_name=user, action="undo", from_state=row.review_state,
                to_state=last.from_state, before=row.final, after=restored,
                note=f"undo of decision {last.id} ({last.action})", undoes_id=last.id,
                label_version=row.version + 1, idempotency_key=key,
                created_at=now)).inserted_primary_key[0]
            out = conn.execute(select(decisions).where(decisions.c.id == new_id)).one()
        return _decision(out)
    except (Conflict, IntegrityError):
        if (done := _replay(engine, key, user)) is not None:
            return done
        raise


def counts(conn: Connection) -> dict[str, dict[str, int]]:
    """→ {thesis_id: {review_state: n}} over all labels (queue header, JSON endpoint)."""
    out: dict[str, dict[str, int]] = {}
    rows = conn.execute(select(labels.c.thesis_id, labels.c.review_state, func.count())
                        .group_by(labels.c.thesis_id, labels.c.review_state)).all()
    for thesis_id, state, n in rows:
        out.setdefault(thesis_id, {s: 0 for s in STATES})[state] = n
    return out


def approved_evidence(conn: Connection, thesis_id: str, *, limit: int = 200) -> list[QueueItem]:
    """Thesis id → its approved and corrected items, newest article first."""
    rows = conn.execute(select(*_item_columns()).select_from(_joined())
                        .where(labels.c.thesis_id == thesis_id,
                               labels.c.review_state.in_(("approved", "corrected")))
                        .order_by(_published.desc(), labels.c.id.desc()).limit(limit)).all()
    return [_item(r) for r in rows]
