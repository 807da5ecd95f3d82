"""What `evidence demo` shows at the end: each labeled pair beside the demo set's expected label,
the agreement per field, and what the ledger would suggest from either set of labels.

    demo_data/expected.jsonl   one line per (page, thesis) for every article the demo stores ×
                               every demo thesis: {"page", "thesis", "title", "label", "why"};
                               `label` has the spec's judged fields (spec/labels.md), `page` is
                               the article's path under /pages/ (the server's port changes)

Agreement is counted per field: `relevant` and `trigger` over every labeled pair; evidence type,
direction and strength over the pairs the expected label calls relevant (a proposal of "not
relevant" there disagrees on all three). The ledger pictures are `ledger.compute_ledger` on the
labeled pairs as if an editor had approved every label as proposed, or corrected every one to
its expected label; nothing is written. A pair whose labeling failed is listed without a proposal:
it counts in no agreement, and as missed when its expected label undermines.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import Connection, func, select

from classifier.config import ThesesFile, ThesisConfig
from classifier.demo import DEMO_DATA
from classifier.errors import ConfigError
from classifier.ledger import Evidence, compute_ledger, ledger_table
from classifier.records import Direction, GoldLabel, Record
from classifier.store.engine import as_utc
from classifier.store.tables import articles, labels, pairs

EXPECTED_FILE = DEMO_DATA / "expected.jsonl"
FIELDS = ("relevant", "evidence_type", "direction", "strength", "trigger")
JUDGED_WHEN_RELEVANT = ("evidence_type", "direction", "strength")
SHOWN_STATES = ("labeled", "failed")  # routed pairs the table lists; 'pending' ones are counted


class Expected(Record):
    """The demo set authors' label for one (page, thesis) pair, with their reason."""

    page: str
    thesis: str
    title: str = ""
    label: GoldLabel
    why: str = ""


class PairView(Record):
    """One routed pair of the demo: the proposed label (None if it failed) beside the expected."""

    pair_id: int
    label_id: int | None = None
    article_id: int
    story_id: int | None = None
    thesis: str
    title: str
    page: str
    state: str  # labeled | failed
    proposed: GoldLabel | None = None
    confidence: float | None = None
    expected: GoldLabel | None = None
    differs: tuple[str, ...] = ()  # fields where proposed and expected disagree


class Agreement(Record):
    """How many pairs of `total` had the proposed `field` equal to the expected one."""

    field: str  # a spec field, or "all" for every judged field at once
    agree: int
    total: int
    over: str  # "pairs" | "relevant pairs"


class LedgerPicture(Record):
    """The ledger's suggestion for a thesis from the proposed vs the expected labels."""

    prior: float
    proposed: float
    expected: float
    counted_proposed: int
    counted_expected: int


class ThesisSummary(Record):
    """Per thesis: its routed pairs, agreement per field, undermining pairs caught, the ledger."""

    thesis_id: str
    title: str
    pairs: tuple[PairView, ...]
    pending: int = 0
    without_expected: int = 0
    agreement: tuple[Agreement, ...]
    undermines_expected: int
    undermines_caught: int
    ledger: LedgerPicture


class DemoSummary(Record):
    """Everything `evidence demo` prints after the stage report (and `--json` emits)."""

    expected_file: str
    theses: tuple[ThesisSummary, ...]
    labeled: int
    failed: int
    pending: int
    agreement: tuple[Agreement, ...]
    undermines_expected: int
    undermines_caught: int


def page_key(url: str) -> str:
    """Article URL → its key in expected.jsonl: the path under /pages/ (no host, port, query)."""
    path = urlsplit(url).path
    return path.split("/pages/", 1)[1] if "/pages/" in path else path.lstrip("/")


def load_expected(path: Path = EXPECTED_FILE) -> dict[tuple[str, str], Expected]:
    """expected.jsonl → {(page, thesis): Expected}; ConfigError naming the line if one is bad."""
    out: dict[tuple[str, str], Expected] = {}
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = Expected.model_validate(json.loads(line))
        except (ValueError, ValidationError) as e:
            raise ConfigError(f"bad expected label: {e}", path=str(path), line=n) from e
        key = (item.page, item.thesis)
        if key in out:
            raise ConfigError(f"second expected label for {item.page} × {item.thesis}",
                              path=str(path), line=n)
        out[key] = item
    return out


def differing(proposed: GoldLabel | None, expected: GoldLabel | None) -> tuple[str, ...]:
    """Proposed, expected label → fields that differ (all if no proposal; none if no expected)."""
    if proposed is None or expected is None:
        return FIELDS if expected is not None else ()
    return tuple(f for f in FIELDS if getattr(proposed, f) != getattr(expected, f))


def pair_views(conn: Connection, expected: dict[tuple[str, str], Expected]) -> list[PairView]:
    """Demo database → its labeled and failed pairs, each with the proposed and expected label."""
    q = (select(pairs.c.id, pairs.c.thesis_id, pairs.c.state, articles.c.id.label("article_id"),
                articles.c.story_id, articles.c.title, articles.c.url,
                labels.c.id.label("label_id"), labels.c.relevant, labels.c.evidence_type,
                labels.c.direction, labels.c.strength, labels.c.trigger, labels.c.confidence)
         .join(articles, articles.c.id == pairs.c.article_id)
         .outerjoin(labels, labels.c.pair_id == pairs.c.id)
         .where(pairs.c.state.in_(SHOWN_STATES))
         .order_by(pairs.c.thesis_id, pairs.c.id))
    views = []
    for r in conn.execute(q):
        page = page_key(r.url)
        exp = expected.get((page, r.thesis_id))
        proposed = None
        if r.label_id is not None:
            proposed = GoldLabel(relevant=r.relevant, evidence_type=r.evidence_type,
                                 direction=r.direction, strength=r.strength, trigger=r.trigger)
        elif r.state == "labeled":
            continue  # served from another pair's cached label: that pair shows it
        gold = exp.label if exp else None
        views.append(PairView(
            pair_id=r.id, label_id=r.label_id, article_id=r.article_id, story_id=r.story_id,
            thesis=r.thesis_id, title=r.title or (exp.title if exp else page), page=page,
            state=r.state, proposed=proposed, confidence=r.confidence, expected=gold,
            differs=differing(proposed, gold)))
    return views


def agreement(views: Iterable[PairView]) -> tuple[Agreement, ...]:
    """Pairs with a proposed and an expected label → agreement per field, then on all fields."""
    judged = [v for v in views if v.proposed is not None and v.expected is not None]
    relevant = [v for v in judged if v.expected.relevant]  # type: ignore[union-attr]

    def count(field: str, over: Sequence[PairView], name: str) -> Agreement:
        same = sum(getattr(v.proposed, field) == getattr(v.expected, field) for v in over)
        return Agreement(field=field, agree=same, total=len(over), over=name)

    out = [count("relevant", judged, "pairs")]
    out += [count(f, relevant, "relevant pairs") for f in JUDGED_WHEN_RELEVANT]
    out.append(count("trigger", judged, "pairs"))
    out.append(Agreement(field="all", agree=sum(not v.differs for v in judged),
                         total=len(judged), over="pairs"))
    return tuple(out)


def undermines(views: Iterable[PairView]) -> tuple[int, int]:
    """Pairs → (expected to undermine, of those also proposed as undermining)."""
    expected = [v for v in views
                if v.expected is not None and v.expected.direction is Direction.UNDERMINES]
    caught = sum(v.proposed is not None and v.proposed.direction is Direction.UNDERMINES
                 for v in expected)
    return len(expected), caught


def _evidence(views: Iterable[PairView], which: str,
              created: dict[int, datetime]) -> list[Evidence]:
    out = []
    for v in views:
        lab = v.proposed if which == "proposed" else v.expected
        if v.label_id is None or lab is None or not lab.relevant:
            continue
        out.append(Evidence(
            label_id=v.label_id, article_id=v.article_id, story_id=v.story_id, title=v.title,
            approved_at=created[v.label_id], evidence_type=lab.evidence_type,
            direction=lab.direction, strength=lab.strength, trigger=lab.trigger))
    return out


def ledger_picture(conn: Connection, thesis: ThesisConfig, views: Sequence[PairView],
                   theses_file: ThesesFile | None = None) -> LedgerPicture:
    """Thesis, its labeled pairs → the ledger's suggestion, approved as proposed vs expected."""
    ids = [v.label_id for v in views if v.label_id is not None]
    created = dict(conn.execute(select(labels.c.id, labels.c.created_at)
                                .where(labels.c.id.in_(ids))).all()) if ids else {}
    created = {k: as_utc(t) for k, t in created.items()}
    table = ledger_table(thesis, theses_file)
    results = {which: compute_ledger(thesis, _evidence(views, which, created),
                                     prior=thesis.probability, table=table)
               for which in ("proposed", "expected")}
    return LedgerPicture(
        prior=thesis.probability, proposed=results["proposed"].suggested,
        expected=results["expected"].suggested,
        counted_proposed=sum(ln.counted for ln in results["proposed"].lines),
        counted_expected=sum(ln.counted for ln in results["expected"].lines))


def summarize(conn: Connection, theses: ThesesFile,
              expected: dict[tuple[str, str], Expected] | None = None, *,
              expected_file: Path = EXPECTED_FILE) -> DemoSummary:
    """Demo database + theses (+ expected labels) → DemoSummary: tables, agreement, ledger."""
    expected = load_expected(expected_file) if expected is None else expected
    views = pair_views(conn, expected)
    pending_by = dict(conn.execute(select(pairs.c.thesis_id, func.count())
                                   .where(pairs.c.state == "pending")
                                   .group_by(pairs.c.thesis_id)).all())
    per = []
    for thesis in theses.thesis:
        # stable across runs (pair ids are not): expected-relevant pairs first, then by title
        mine = sorted((v for v in views if v.thesis == thesis.id),
                      key=lambda v: (not (v.expected and v.expected.relevant), v.title))
        n_und, n_caught = undermines(mine)
        per.append(ThesisSummary(
            thesis_id=thesis.id, title=thesis.title, pairs=tuple(mine),
            pending=pending_by.get(thesis.id, 0),
            without_expected=sum(v.expected is None for v in mine),
            agreement=agreement(mine), undermines_expected=n_und, undermines_caught=n_caught,
            ledger=ledger_picture(conn, thesis, mine, theses)))
    n_und, n_caught = undermines(views)
    return DemoSummary(
        expected_file=str(expected_file), theses=tuple(per),
        labeled=sum(v.proposed is not None for v in views),
        failed=sum(v.state == "failed" for v in views), pending=sum(pending_by.values()),
        agreement=agreement(views), undermines_expected=n_und, undermines_caught=n_caught)

