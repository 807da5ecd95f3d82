"""Stage 7: the evidence ledger. Approved evidence → a suggested probability for a thesis.

    prior odds (theses.toml, or the last probability an editor applied)
      × Π likelihood ratio of each counted item approved since      (supports: LR, undermines: 1/LR)
      = suggested odds

Rules, in the order `compute_ledger` applies them:
1. Only labels an editor approved or corrected count, with the judged fields of the latest
   decision (`labels.final`); a label corrected to "not relevant" or rejected counts nothing.
2. One story counts once: of the items in one near-duplicate story (dedupe's `story_id`), the
   one with the largest |log LR| counts (ties: direct first, then the earliest approval); the
   others are listed with a note. A story already approved before the last applied probability
   is absorbed in that probability and does not count again.
3. Circumstantial evidence alone moves the log-odds at most `circumstantial_cap` per direction:
   if no direct item points the same way, the circumstantial items in that direction are scaled
   down together so that their sum is the cap.

Nothing here writes a probability: `apply_probability` records what an editor chose.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, func, insert, select, update

from classifier.config import LedgerConfig, ThesesFile, ThesisConfig
from classifier.errors import LedgerError
from classifier.records import Direction, EvidenceType, Record, Strength
from classifier.store.engine import as_utc, utcnow
from classifier.store.tables import (articles, decisions, labels, probability_history, theses,
                                     users)

# Likelihood ratios for a *supporting* item (an undermining one gets 1/LR; neutral gets 1).
# LR = P(this report | thesis true) / P(this report | thesis false). Defended in
# docs/ledger.md: one strong direct observation (an independent benchmark run showing
# parity) takes a 75% forecast to 90%; a weak rumour or proxy moves odds by 10%.
DEFAULT_LIKELIHOOD_RATIOS: dict[str, float] = {
    "direct.strong": 3.0,
    "direct.moderate": 2.0,
    "direct.weak": 1.3,
    "circumstantial.strong": 1.5,
    "circumstantial.moderate": 1.25,
    "circumstantial.weak": 1.1,
}
# Circumstantial evidence alone may move the log-odds by at most ln 2 per direction: together,
# signals and conditions can double (or halve) the odds, the weight of one moderate direct item.
DEFAULT_CIRCUMSTANTIAL_CAP = math.log(2.0)
COUNTED_STATES = ("approved", "corrected")


# ---------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------


class LedgerTable(Record):
    """The effective likelihood-ratio table and circumstantial cap for one thesis."""

    likelihood_ratios: dict[str, float]
    circumstantial_cap: float

    def lr(self, evidence_type: EvidenceType, strength: Strength, direction: Direction) -> float:
        """Type, strength, direction → likelihood ratio (undermines: 1/LR; neutral: 1)."""
        if direction is Direction.NEUTRAL:
            return 1.0
        base = self.likelihood_ratios[f"{evidence_type.value}.{strength.value}"]
        return base if direction is Direction.SUPPORTS else 1.0 / base


class Evidence(Record):
    """One approved or corrected label as the ledger sees it (judged fields after review)."""

    label_id: int
    article_id: int
    story_id: int | None = None
    title: str = ""
    url: str | None = None
    published: datetime | None = None
    approved_at: datetime
    approved_by: str | None = None
    review_state: str = "approved"
    evidence_type: EvidenceType
    direction: Direction
    strength: Strength
    trigger: str | None = None

    @property
    def story(self) -> str:
        """Story key: the dedupe story, or the article itself when it has none."""
        return f"s{self.story_id}" if self.story_id is not None else f"a{self.article_id}"


class LedgerLine(Record):
    """One item in the ledger: its LR, whether it counted, and its log-odds contribution."""

    evidence: Evidence
    lr: float
    log_lr: float
    counted: bool
    contribution: float  # log-odds actually added (after the cap); 0 when not counted
    note: str = ""


class TriggerDistance(Record):
    """How far the suggested probability is from a stated trigger's `to` value."""

    trigger_id: str
    direction: str  # up | down
    to: float
    condition: str
    log_odds: float  # still to go in the trigger's direction; <= 0 once reached
    direct_strong_items: float  # log_odds / ln(LR direct.strong), >= 0
    reached: bool


class LedgerResult(Record):
    """The ledger of one thesis: prior, lines, suggested probability and trigger distances."""

    thesis_id: str
    prior: float
    prior_source: str  # "theses.toml" | "applied"
    prior_at: datetime | None = None
    lines: tuple[LedgerLine, ...] = ()
    log_odds_change: float = 0.0
    suggested: float
    table: LedgerTable
    capped: dict[str, float] = {}  # direction → raw circumstantial log-odds that the cap cut
    triggers: tuple[TriggerDistance, ...] = ()


class HistoryPoint(Record):
    """One applied probability: who, when, from, to, why."""

    id: int
    thesis_id: str
    from_probability: float
    to_probability: float
    suggested_probability: float | None = None
    user_name: str
    note: str = ""
    created_at: datetime


class TimelinePoint(Record):
    """The ledger's running value right after one item was approved."""

    at: datetime
    probability: float
    label_id: int | None = None


# ---------------------------------------------------------------------------------------------
# Pure computation
# ---------------------------------------------------------------------------------------------


def logit(p: float) -> float:
    """Probability → log-odds."""
    return math.log(p / (1.0 - p))


def expit(x: float) -> float:
    """Log-odds → probability."""
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def ledger_table(thesis: ThesisConfig, theses_file: ThesesFile | None = None) -> LedgerTable:
    """Thesis (+ the file's global [ledger]) → table: code defaults < global < per thesis."""
    ratios = dict(DEFAULT_LIKELIHOOD_RATIOS)
    cap = DEFAULT_CIRCUMSTANTIAL_CAP
    layers: list[LedgerConfig | None] = [theses_file.ledger if theses_file else None, thesis.ledger]
    for layer in layers:
        if layer is None:
            continue
        ratios.update(layer.likelihood_ratios)
        if layer.circumstantial_cap is not None:
            cap = layer.circumstantial_cap
    return LedgerTable(likelihood_ratios=ratios, circumstantial_cap=cap)


def _weight(e: Evidence, table: LedgerTable) -> float:
    """Evidence → |log LR| (0 for neutral), from the base ratio so that ties are exact."""
    if e.direction is Direction.NEUTRAL:
        return 0.0
    return math.log(table.likelihood_ratios[f"{e.evidence_type.value}.{e.strength.value}"])


def _signed(e: Evidence, table: LedgerTable) -> float:
    """Evidence → its log LR: +weight supports, −weight undermines, 0 neutral."""
    return -_weight(e, table) if e.direction is Direction.UNDERMINES else _weight(e, table)


def _strongest_first(e: Evidence, table: LedgerTable) -> tuple[float, int, datetime, int]:
    return (-_weight(e, table), 0 if e.evidence_type is EvidenceType.DIRECT else 1,
            as_utc(e.approved_at), e.label_id)


def compute_ledger(thesis: ThesisConfig, items: Iterable[Evidence], *, prior: float,
                   table: LedgerTable, since: datetime | None = None,
                   prior_source: str = "theses.toml") -> LedgerResult:
    """Thesis, approved evidence, prior (applied at `since`) and table → LedgerResult."""
    if not 0.0 < prior < 1.0:
        raise ValueError(f"prior must be strictly between 0 and 1, got {prior}")
    since = as_utc(since)
    items = sorted(items, key=lambda e: (as_utc(e.approved_at), e.label_id))
    before = [e for e in items if since is not None and as_utc(e.approved_at) <= since]
    after = [e for e in items if since is None or as_utc(e.approved_at) > since]
    absorbed = {e.story for e in before}

    # Rule 2: one item per story; stories absorbed into the applied prior count nothing.
    by_story: dict[str, list[Evidence]] = {}
    for e in after:
        by_story.setdefault(e.story, []).append(e)
    chosen: dict[int, str] = {}  # label_id → "" when counted, else the note
    for story, group in by_story.items():
        if story in absorbed:
            for e in group:
                chosen[e.label_id] = (
                    f"story already counted in the probability applied {since:%Y-%m-%d %H:%M}"
                    if since else "story already counted")
            continue
        ranked = sorted(group, key=lambda e: _strongest_first(e, table))
        chosen[ranked[0].label_id] = ""
        for e in ranked[1:]:
            chosen[e.label_id] = f"same story as label {ranked[0].label_id}; counted once"

    # Rule 3: cap circumstantial log-odds per direction unless a direct item points the same way.
    scale = {Direction.SUPPORTS: 1.0, Direction.UNDERMINES: 1.0}
    capped: dict[str, float] = {}
    for d in scale:
        counted = [e for e in after if chosen[e.label_id] == "" and e.direction is d]
        if any(e.evidence_type is EvidenceType.DIRECT for e in counted):
            continue
        raw = sum(_weight(e, table) for e in counted)
        if raw > table.circumstantial_cap:
            scale[d] = table.circumstantial_cap / raw
            capped[d.value] = raw

    lines: list[LedgerLine] = []
    total = 0.0
    for e in after:
        lr = table.lr(e.evidence_type, e.strength, e.direction)
        log_lr = _signed(e, table)
        note = chosen[e.label_id]
        counted = note == ""
        contribution = 0.0
        if counted:
            factor = scale.get(e.direction, 1.0)
            contribution = log_lr * factor
            if factor < 1.0:
                note = (f"circumstantial cap: no direct item {e.direction.value} the thesis; "
                        f"scaled ×{factor:.2f}")
        total += contribution
        lines.append(LedgerLine(evidence=e, lr=lr, log_lr=log_lr, counted=counted,
                                contribution=contribution, note=note))

    suggested = expit(logit(prior) + total)
    return LedgerResult(
        thesis_id=thesis.id, prior=prior, prior_source=prior_source, prior_at=since,
        lines=tuple(lines), log_odds_change=total, suggested=suggested, table=table,
        capped=capped, triggers=tuple(trigger_distances(thesis, suggested, table)))


def trigger_distances(thesis: ThesisConfig, probability: float,
                      table: LedgerTable) -> list[TriggerDistance]:
    """Thesis triggers and a probability → distance to each `to`, in log-odds and strong items."""
    unit = math.log(table.likelihood_ratios["direct.strong"])
    out = []
    for t in thesis.trigger:
        gap = logit(t.to) - logit(probability)
        to_go = gap if t.direction == "up" else -gap
        out.append(TriggerDistance(
            trigger_id=t.id, direction=t.direction, to=t.to, condition=t.condition,
            log_odds=to_go, direct_strong_items=max(to_go, 0.0) / unit, reached=to_go <= 0.0))
    return out


class _Running:
    """The ledger's log-odds change, updated one approval at a time (same rules as compute_ledger).

    Adding an item costs O(1), so a timeline over n approvals is O(n), not n full recomputes.
    """

    def __init__(self, table: LedgerTable, absorbed: set[str]) -> None:
        self.table, self.absorbed = table, absorbed
        self.best: dict[str, Evidence] = {}
        self.direct_count = {Direction.SUPPORTS: 0, Direction.UNDERMINES: 0}
        self.direct_sum = 0.0
        self.circumstantial = {Direction.SUPPORTS: 0.0, Direction.UNDERMINES: 0.0}

    def _count(self, e: Evidence, sign: int) -> None:
        if e.direction is Direction.NEUTRAL:
            return
        if e.evidence_type is EvidenceType.DIRECT:
            self.direct_count[e.direction] += sign
            self.direct_sum += sign * _signed(e, self.table)
        else:
            self.circumstantial[e.direction] += sign * _weight(e, self.table)

    def add(self, e: Evidence) -> None:
        if e.story in self.absorbed:
            return
        held = self.best.get(e.story)
        if held is None or _strongest_first(e, self.table) < _strongest_first(held, self.table):
            if held is not None:
                self._count(held, -1)
            self.best[e.story] = e
            self._count(e, +1)

    def log_odds(self) -> float:
        total = self.direct_sum
        for d, sign in ((Direction.SUPPORTS, 1.0), (Direction.UNDERMINES, -1.0)):
            raw = self.circumstantial[d]
            cap = self.table.circumstantial_cap
            total += sign * (raw if self.direct_count[d] else min(raw, cap))
        return total


def running_values(thesis: ThesisConfig, items: Sequence[Evidence],
                   history: Sequence[HistoryPoint], *, table: LedgerTable) -> list[TimelinePoint]:
    """All evidence and the applied history → the ledger's value after each approval, per segment.

    Each applied probability starts a new segment whose prior is that value; within a segment
    the value after an approval is the ledger over the evidence approved up to then.
    """
    anchors: list[tuple[datetime | None, float]] = [(None, thesis.probability)]
    anchors += [(as_utc(h.created_at), h.to_probability) for h in history]
    ordered = sorted(items, key=lambda e: (as_utc(e.approved_at), e.label_id))
    points: list[TimelinePoint] = []
    for i, (start, prior) in enumerate(anchors):
        end = anchors[i + 1][0] if i + 1 < len(anchors) else None
        if start is not None:
            points.append(TimelinePoint(at=start, probability=prior))
        absorbed = {e.story for e in ordered
                    if start is not None and as_utc(e.approved_at) <= start}
        running = _Running(table, absorbed)
        for e in ordered:
            at = as_utc(e.approved_at)
            if (start is not None and at <= start) or (end is not None and at > end):
                continue
            running.add(e)
            points.append(TimelinePoint(at=at, probability=expit(logit(prior) + running.log_odds()),
                                        label_id=e.label_id))
    return points


# ---------------------------------------------------------------------------------------------
# Reading and writing the store
# ---------------------------------------------------------------------------------------------


def _judged(row: Any) -> dict[str, Any]:
    final = row.final
    if isinstance(final, dict):
        return final
    return {"relevant": row.relevant, "evidence_type": row.evidence_type,
            "direction": row.direction, "strength": row.strength, "trigger": row.trigger}


def load_evidence(conn: Connection, thesis_id: str) -> list[Evidence]:
    """Thesis id → its approved/corrected relevant labels as Evidence (rejected ones never)."""
    last = (select(decisions.c.label_id, func.max(decisions.c.id).label("decision_id"))
            .where(decisions.c.to_state.in_(COUNTED_STATES))
            .group_by(decisions.c.label_id).subquery())
    q = (select(labels.c.id, labels.c.article_id, labels.c.review_state, labels.c.final,
                labels.c.relevant, labels.c.evidence_type, labels.c.direction, labels.c.strength,
                labels.c.trigger, labels.c.created_at.label("label_created_at"),
                articles.c.story_id, articles.c.title, articles.c.url, articles.c.published,
                decisions.c.created_at.label("decided_at"), decisions.c.user_name)
         .join(articles, articles.c.id == labels.c.article_id)
         .outerjoin(last, last.c.label_id == labels.c.id)
         .outerjoin(decisions, decisions.c.id == last.c.decision_id)
         .where(and_(labels.c.thesis_id == thesis_id, labels.c.review_state.in_(COUNTED_STATES)))
         .order_by(labels.c.id))
    out = []
    for row in conn.execute(q):
        j = _judged(row)
        if not j.get("relevant") or not (j.get("evidence_type") and j.get("direction")
                                         and j.get("strength")):
            continue
        out.append(Evidence(
            label_id=row.id, article_id=row.article_id, story_id=row.story_id,
            title=row.title or "", url=row.url, published=as_utc(row.published),
            approved_at=as_utc(row.decided_at or row.label_created_at),
            approved_by=row.user_name, review_state=row.review_state,
            evidence_type=EvidenceType(j["evidence_type"]), direction=Direction(j["direction"]),
            strength=Strength(j["strength"]), trigger=j.get("trigger")))
    return out


def direction_counts(conn: Connection, thesis_id: str) -> dict[str, int]:
    """Thesis id → {supports, undermines, neutral: n} over its approved and corrected relevant
    labels, by the judged direction (`labels.final`)."""
    out = {d.value: 0 for d in Direction}
    rows = conn.execute(select(labels.c.final, labels.c.relevant, labels.c.evidence_type,
                               labels.c.direction, labels.c.strength, labels.c.trigger)
                        .where(labels.c.thesis_id == thesis_id,
                               labels.c.review_state.in_(COUNTED_STATES)))
    for row in rows:
        j = _judged(row)
        if j.get("relevant") and j.get("direction") in out:
            out[j["direction"]] += 1
    return out


def load_history(conn: Connection, thesis_id: str) -> list[HistoryPoint]:
    """Thesis id → its applied probabilities, oldest first."""
    rows = conn.execute(select(probability_history)
                        .where(probability_history.c.thesis_id == thesis_id)
                        .order_by(probability_history.c.created_at, probability_history.c.id))
    return [HistoryPoint(id=r.id, thesis_id=r.thesis_id, from_probability=r.from_probability,
                         to_probability=r.to_probability,
                         suggested_probability=r.suggested_probability, user_name=r.user_name,
                         note=r.note or "", created_at=as_utc(r.created_at)) for r in rows]


def ledger_for(conn: Connection, thesis: ThesisConfig,
               theses_file: ThesesFile | None = None) -> LedgerResult:
    """Thesis → its ledger now: prior from the last applied probability (or theses.toml)."""
    history = load_history(conn, thesis.id)
    table = ledger_table(thesis, theses_file)
    items = load_evidence(conn, thesis.id)
    if history:
        last = history[-1]
        return compute_ledger(thesis, items, prior=last.to_probability, table=table,
                              since=last.created_at, prior_source="applied")
    return compute_ledger(thesis, items, prior=thesis.probability, table=table)


def current_probability(conn: Connection, thesis: ThesisConfig) -> float:
    """Thesis → the last probability an editor applied, else the one stated in theses.toml."""
    history = load_history(conn, thesis.id)
    return history[-1].to_probability if history else thesis.probability


def check_editor(conn: Connection, user_name: str) -> None:
    """User name → None if an enabled editor or admin of the review desk, else LedgerError."""
    row = conn.execute(select(users.c.role, users.c.disabled)
                       .where(users.c.name == user_name)).first()
    if row is None:
        raise LedgerError(f"unknown user {user_name!r}: only review-desk editors and admins "
                          "can apply a probability (evidence user add)")
    if row.disabled or row.role not in ("editor", "admin"):
        raise LedgerError(f"user {user_name!r} may not apply a probability")


def apply_probability(conn: Connection, thesis: ThesisConfig, *, to: float, user_name: str,
                      note: str, theses_file: ThesesFile | None = None,
                      expected_from: float | None = None) -> HistoryPoint:
    """Editor's choice → a probability_history row (who, when, from, to, why) and theses row.

    `expected_from` is the current probability the editor's form showed: if someone applied a
    value since, the change is refused instead of silently recording a stale "from".
    """
    if not 0.0 < to < 1.0:
        raise LedgerError(f"probability must be strictly between 0 and 1, got {to}")
    if not note.strip():
        raise LedgerError("a note saying why is required to change a probability")
    check_editor(conn, user_name)
    now = utcnow()
    # Lock the thesis row first (FOR UPDATE on PostgreSQL; SQLite's write transaction is already
    # exclusive) so two editors applying at once are serialised and the second sees the first.
    row = conn.execute(select(theses.c.id).where(theses.c.id == thesis.id)
                       .with_for_update()).first()
    if row is None:
        conn.execute(insert(theses).values(
            id=thesis.id, title=thesis.title, content_hash=thesis.content_hash,
            initial_probability=thesis.probability, probability=thesis.probability,
            updated_at=now))
    result = ledger_for(conn, thesis, theses_file)
    from_p = result.prior
    if expected_from is not None and abs(from_p - expected_from) > 1e-9:
        raise LedgerError(f"the probability of {thesis.id} changed to {from_p:.1%} since your "
                          f"page showed {expected_from:.1%}; reload it and decide again")
    counted = [ln.evidence.label_id for ln in result.lines if ln.counted]
    new_id = conn.execute(insert(probability_history).values(
        thesis_id=thesis.id, from_probability=from_p, to_probability=to,
        suggested_probability=result.suggested, user_name=user_name, note=note.strip(),
        evidence=counted, created_at=now).returning(probability_history.c.id)).scalar_one()
    conn.execute(update(theses).where(theses.c.id == thesis.id)
                 .values(probability=to, updated_at=now))
    return HistoryPoint(id=new_id, thesis_id=thesis.id, from_probability=from_p,
                        to_probability=to, suggested_probability=result.suggested,
                        user_name=user_name, note=note.strip(), created_at=now)
