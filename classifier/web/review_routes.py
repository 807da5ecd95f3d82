"""Review pages and the JSON API: queue, item, decisions, undo, thesis, feeds health, LLM calls.

Every decision form carries the CSRF token, the label version it was rendered from (a stale form
is a Conflict) and its own idempotency key (a double submit is one decision). Filters travel as a
query string `q`, re-parsed through QueueFilter on every use (never echoed as a URL).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Body, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, func, select

from classifier import ledger, queue
from classifier.combine.provenance import differing
from classifier.config import ThesisConfig
from classifier.encoder import CLASSES
from classifier.errors import ConfigError, Conflict, NotFound, ReviewError
from classifier.queue import QueueFilter
from classifier.store.engine import as_utc, utcnow
from classifier.store.tables import articles, entries, feeds, labels, llm_calls, skips
from classifier.users import User
from classifier.web.app import THESIS_PANELS
from classifier.web.auth import CurrentUser
from classifier.web.templating import highlight, render

router = APIRouter()
COUNT_LIMIT = 1000  # the queue page says "1000+" rather than counting a long queue to the end
NOTICES = {  # fixed texts: a notice code in the URL can never inject words into the page
    "empty": "Nothing left to review with these filters.",
    "nothing-to-undo": "You have no decision left to undo.",
    "undone": "Your last decision was undone; the item is back in its earlier state.",
    "end": "That was the end of the queue in that direction.",
}


def _desk(request: Request):  # type: ignore[no-untyped-def]
    return request.app.state.desk


def _thesis(request: Request, thesis_id: str) -> ThesisConfig | None:
    try:
        return _desk(request).theses.get(thesis_id)
    except ConfigError:
        return None


def _filter_from(request: Request) -> QueueFilter:
    return QueueFilter.from_query(dict(request.query_params))


def _q(flt: QueueFilter) -> str:
    return urlencode(flt.to_query())


def _with_q(path: str, q: str, **extra: str) -> str:
    query = "&".join(p for p in (q, urlencode(extra)) if p)
    return f"{path}?{query}" if query else path


# ---------------------------------------------------------------------------------------------
# Queue
# ---------------------------------------------------------------------------------------------


@router.get("/")
def home() -> Response:
    """→ the queue."""
    return RedirectResponse("/queue", status_code=303)


@router.get("/queue", response_class=HTMLResponse)
def queue_page(request: Request, user: CurrentUser, page: int = 1, notice: str = "") -> Response:
    """Filters, page → the queue in review order, with who holds what."""
    desk = _desk(request)
    flt = _filter_from(request)
    size = desk.settings.page_size
    page = max(page, 1)
    with desk.engine.connect() as conn:
        items, total = queue.list_queue(conn, flt, limit=size, offset=(page - 1) * size,
                                        count_limit=COUNT_LIMIT)
        feed_names = conn.execute(select(feeds.c.name).order_by(feeds.c.name)).scalars().all()
    return render(request, "queue.html", {
        "items": items, "total": total, "more": total >= COUNT_LIMIT, "flt": flt, "q": _q(flt),
        "page": page,
        "pages": max((total + size - 1) // size, 1), "feed_names": feed_names,
        "notice": NOTICES.get(notice), "now": utcnow()})


@router.get("/next")
def next_item(request: Request, user: CurrentUser) -> Response:
    """Filters → claim the first free pending item and open it (or back to the queue if none)."""
    desk = _desk(request)
    flt = _filter_from(request)
    label_id = queue.claim_next(desk.engine, user.name, flt, lease=desk.settings.lease)
    if label_id is None:
        return RedirectResponse(_with_q("/queue", _q(flt), notice="empty"), status_code=303)
    return RedirectResponse(_with_q(f"/item/{label_id}", _q(flt)), status_code=303)


# ---------------------------------------------------------------------------------------------
# Item
# ---------------------------------------------------------------------------------------------


def item_context(conn: Connection, label_id: int) -> dict[str, Any]:
    """Label id → everything the item page shows about it (label, article, story, other theses)."""
    item = queue.get_item(conn, label_id)
    label = conn.execute(select(labels).where(labels.c.id == label_id)).one()
    article = conn.execute(select(articles.c.id, articles.c.url, articles.c.title,
                                  articles.c.author, articles.c.published, articles.c.site_name,
                                  articles.c.text, articles.c.story_id, articles.c.extracted_from,
                                  articles.c.created_at)
                           .where(articles.c.id == item.article_id)).one()
    others = conn.execute(select(labels.c.id, labels.c.thesis_id, labels.c.review_state,
                                 labels.c.relevant, labels.c.evidence_type, labels.c.direction,
                                 labels.c.strength, labels.c.confidence, labels.c.trigger)
                          .where(labels.c.article_id == item.article_id, labels.c.id != label_id)
                          .order_by(labels.c.thesis_id)).all()
    copies = []
    if article.story_id is not None:
        copies = conn.execute(select(articles.c.id, articles.c.title, articles.c.url,
                                     articles.c.site_name, articles.c.published)
                              .where(articles.c.story_id == article.story_id,
                                     articles.c.id != article.id)
                              .order_by(articles.c.published.desc())).all()
    n_calls = conn.execute(select(func.count()).select_from(llm_calls)
                           .where(llm_calls.c.pair_id == label.pair_id)).scalar_one()
    return {"item": item, "label": label, "article": article, "others": others, "copies": copies,
            "published": as_utc(article.published), "segments": highlight(article.text,
                                                                           label.quotes),
            "history": queue.history(conn, label_id=label_id, limit=20), "n_calls": n_calls,
            "current": label.final if label.final is not None else queue.proposed(label),
            "opinions": opinions(label.proposals)}


def opinions(proposals: dict[str, Any] | None) -> dict[str, Any] | None:
    """Stored proposals → the item page's two opinions: one row per differing field (each side's
    value and confidence, who decided), the LLM's status and reason, the models; None: one labeler.
    """
    if not proposals or not proposals.get("encoder"):
        return None
    enc, llm = proposals["encoder"], proposals.get("llm")
    decided = proposals.get("decided") or {}
    rows = [{"field": f, "encoder": _shown(enc.get(f)), "encoder_confidence": _head_prob(enc, f),
             "llm": _shown(llm.get(f)), "llm_confidence": llm.get("confidence"),
             "decided": decided.get(f, "—")} for f in differing(enc, llm)]
    status = proposals.get("llm_status") or ("answered" if llm else "skipped")
    return {"rows": rows, "status": status, "reason": proposals.get("llm_reason"),
            "encoder_model": enc.get("model"), "llm_model": (llm or {}).get("model"),
            "combiner": proposals.get("combiner")}


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return "—" if value is None else str(value)


def _head_prob(encoder: dict[str, Any], field: str) -> float | None:
    """The encoder's proposal, a field → the probability its head gave the proposed class (the
    head's largest when the class is not one of CLASSES[field]); None without probs."""
    probs = (encoder.get("probs") or {}).get(field)
    if not probs:
        return None
    classes = CLASSES.get(field, ())
    value = _shown(encoder.get(field))
    if value in classes and classes.index(value) < len(probs):
        return float(probs[classes.index(value)])
    return float(max(probs))


@router.get("/item/{label_id}", response_class=HTMLResponse)
def item_page(request: Request, user: CurrentUser, label_id: int, notice: str = "") -> Response:
    """Label id → the item page; a pending item is claimed for this editor (or shows its holder)."""
    return _item_response(request, user, label_id, notice=notice)


def _item_response(request: Request, user: User, label_id: int, *, notice: str = "",
                   error: str | None = None, status_code: int = 200,
                   form: dict[str, Any] | None = None) -> Response:
    desk = _desk(request)
    flt = _filter_from(request)
    holder = queue.claim(desk.engine, label_id, user.name, lease=desk.settings.lease)
    with desk.engine.connect() as conn:
        ctx = item_context(conn, label_id)
    ctx.update({"flt": flt, "q": _q(flt), "holder": holder,
                "thesis": _thesis(request, ctx["item"].thesis_id),
                "notice": NOTICES.get(notice), "error": error})
    if form is not None:
        ctx["current"] = form
    return render(request, "item.html", ctx, status_code=status_code)


def _opt(value: str | None) -> str | None:
    return value or None


@router.get("/item/{label_id}/next")
def neighbour_next(request: Request, user: CurrentUser, label_id: int) -> Response:
    """Label id, filters → the item after it in review order (j), or the queue at the end."""
    return _neighbour(request, label_id, 1)


@router.get("/item/{label_id}/prev")
def neighbour_prev(request: Request, user: CurrentUser, label_id: int) -> Response:
    """Label id, filters → the item before it in review order (k), or the queue at the start."""
    return _neighbour(request, label_id, 0)


def _neighbour(request: Request, label_id: int, which: int) -> Response:
    # resolved on demand: the item page itself need not compute both neighbours
    flt = _filter_from(request)
    with _desk(request).engine.connect() as conn:
        target = queue.neighbours(conn, flt, label_id)[which]
    if target is None:
        return RedirectResponse(_with_q("/queue", _q(flt), notice="end"), status_code=303)
    return RedirectResponse(_with_q(f"/item/{target}", _q(flt)), status_code=303)


@router.post("/item/{label_id}/decide")
def decide(request: Request, user: CurrentUser, label_id: int,
           action: Annotated[str, Form()], version: Annotated[int, Form()],
           key: Annotated[str, Form(max_length=100)], q: Annotated[str, Form()] = "",
           note: Annotated[str, Form(max_length=2000)] = "",
           relevant: Annotated[str, Form()] = "", evidence_type: Annotated[str, Form()] = "",
           direction: Annotated[str, Form()] = "", strength: Annotated[str, Form()] = "",
           trigger: Annotated[str, Form()] = "") -> Response:
    """Decision form → one decision, then the next item; invalid correction → the form again."""
    desk = _desk(request)
    flt = QueueFilter.from_query(dict(parse_qsl(q)))
    fields = None
    if action == "correct":
        rel = relevant == "true"
        fields = {"relevant": rel, "evidence_type": _opt(evidence_type) if rel else None,
                  "direction": _opt(direction) if rel else None,
                  "strength": _opt(strength) if rel else None,
                  "trigger": _opt(trigger) if rel else None}
    try:
        queue.decide(desk.engine, label_id, user=user.name, action=action,  # type: ignore[arg-type]
                     version=version, key=key, fields=fields, note=note, lease=desk.settings.lease)
    except (NotFound, Conflict):
        raise
    except ReviewError as e:
        request.scope["query_string"] = _q(flt).encode()
        return _item_response(request, user, label_id, error=str(e), status_code=422,
                         form={**(fields or {}), "note": note})
    return RedirectResponse(_with_q("/next", _q(flt)), status_code=303)


@router.post("/undo")
def undo(request: Request, user: CurrentUser, key: Annotated[str, Form(max_length=100)],
         q: Annotated[str, Form()] = "") -> Response:
    """Undo this editor's latest decision (a new decision row) and open that item again."""
    flt = QueueFilter.from_query(dict(parse_qsl(q)))
    try:
        d = queue.undo_last(_desk(request).engine, user=user.name, key=key)
    except NotFound:
        return RedirectResponse(_with_q("/queue", _q(flt), notice="nothing-to-undo"),
                                status_code=303)
    return RedirectResponse(_with_q(f"/item/{d.label_id}", _q(flt), notice="undone"),
                            status_code=303)


@router.get("/item/{label_id}/calls", response_class=HTMLResponse)
def calls_page(request: Request, user: CurrentUser, label_id: int) -> Response:
    """Label id → every LLM call made for its (article, thesis) pair, attempts and failures too."""
    with _desk(request).engine.connect() as conn:
        item = queue.get_item(conn, label_id)
        pair_id = conn.execute(select(labels.c.pair_id).where(labels.c.id == label_id)).scalar()
        calls = conn.execute(select(llm_calls).where(llm_calls.c.pair_id == pair_id)
                             .order_by(llm_calls.c.id)).all()
    return render(request, "calls.html", {"item": item, "calls": calls})


# ---------------------------------------------------------------------------------------------
# Thesis, theses, feeds
# ---------------------------------------------------------------------------------------------


@router.get("/theses", response_class=HTMLResponse)
def theses_page(request: Request, user: CurrentUser) -> Response:
    """→ every thesis with its queue counts."""
    with _desk(request).engine.connect() as conn:
        counts = queue.counts(conn)
    ids = [t.id for t in _desk(request).theses.thesis]
    ids += sorted(set(counts) - set(ids))
    return render(request, "theses.html", {"ids": ids, "counts": counts,
                                           "configs": {t.id: t for t in
                                                       _desk(request).theses.thesis}})


@router.get("/thesis/{thesis_id}", response_class=HTMLResponse)
def thesis_page(request: Request, user: CurrentUser, thesis_id: str) -> Response:
    """Thesis id → its statement, scope, triggers and approved evidence, newest first."""
    config = _thesis(request, thesis_id)
    with _desk(request).engine.connect() as conn:
        evidence = queue.approved_evidence(conn, thesis_id)
        counts = queue.counts(conn).get(thesis_id)
        if config is None and counts is None:
            raise NotFound(f"no thesis {thesis_id!r}")
        panels = [(p.template, p.context(conn, thesis_id, config, _desk(request).theses))
                  for p in THESIS_PANELS]
        directions = ledger.direction_counts(conn, thesis_id)
    return render(request, "thesis.html", {"thesis_id": thesis_id, "thesis": config,
                                           "evidence": evidence, "counts": counts or {},
                                           "directions": directions, "panels": panels})


@router.get("/feeds", response_class=HTMLResponse)
def feeds_page(request: Request, user: CurrentUser) -> Response:
    """→ each feed's health: last poll, status, errors, entries by state, skips."""
    with _desk(request).engine.connect() as conn:
        rows = conn.execute(select(feeds).order_by(feeds.c.name)).all()
        by_state: dict[int, dict[str, int]] = {}
        for feed_id, state, n in conn.execute(select(entries.c.feed_id, entries.c.state,
                                                     func.count())
                                              .group_by(entries.c.feed_id, entries.c.state)):
            by_state.setdefault(feed_id, {})[state] = n
        n_skips = dict(conn.execute(select(skips.c.feed_id, func.count())
                                    .group_by(skips.c.feed_id)).all())
    return render(request, "feeds.html", {"feeds": rows, "by_state": by_state, "n_skips": n_skips,
                                          "as_utc": as_utc})


# ---------------------------------------------------------------------------------------------
# JSON API (same session cookie; POSTs carry the X-CSRF-Token header)
# ---------------------------------------------------------------------------------------------


@router.get("/api/queue")
def api_queue(request: Request, user: CurrentUser, limit: int = 50,
              offset: int = 0) -> JSONResponse:
    """Filters, limit, offset → {"total", "filter", "items"} in review order."""
    flt = _filter_from(request)
    with _desk(request).engine.connect() as conn:
        items, total = queue.list_queue(conn, flt, limit=min(max(limit, 1), 500),
                                        offset=max(offset, 0))
    return JSONResponse({"total": total, "filter": flt.model_dump(mode="json"),
                         "items": [i.model_dump(mode="json") for i in items]})


@router.get("/api/labels/{label_id}")
def api_label(request: Request, user: CurrentUser, label_id: int) -> JSONResponse:
    """Label id → the item, the proposal (with rationale and quotes) and its decisions."""
    with _desk(request).engine.connect() as conn:
        item = queue.get_item(conn, label_id)
        label = conn.execute(select(labels.c.confidence, labels.c.rationale, labels.c.quotes,
                                    labels.c.model, labels.c.backend)
                             .where(labels.c.id == label_id)).one()
        hist = queue.history(conn, label_id=label_id, limit=1000)
    return JSONResponse({"item": item.model_dump(mode="json"),
                         "proposal": dict(label._mapping),
                         "decisions": [d.model_dump(mode="json") for d in hist]})


@router.get("/api/decisions")
def api_decisions(request: Request, user: CurrentUser, label_id: int | None = None,
                  user_name: str | None = None, before_id: int | None = None,
                  limit: int = 100) -> JSONResponse:
    """Optional label/user filters, cursor → decisions newest first, with the next cursor."""
    with _desk(request).engine.connect() as conn:
        rows = queue.history(conn, label_id=label_id, user=user_name, before_id=before_id,
                             limit=min(max(limit, 1), 1000))
    return JSONResponse({"decisions": [d.model_dump(mode="json") for d in rows],
                         "next_before_id": rows[-1].id if rows else None})


class DecisionIn(BaseModel):
    """A decision posted as JSON."""

    model_config = ConfigDict(extra="forbid")
    action: str
    version: int
    key: str | None = None
    fields: dict[str, Any] | None = None
    note: str | None = None


@router.post("/api/labels/{label_id}/decisions")
def api_decide(request: Request, user: CurrentUser, label_id: int,
               body: Annotated[DecisionIn, Body()]) -> JSONResponse:
    """{action, version, key, fields, note} → the decision (201; 200 when a replayed key)."""
    d = queue.decide(_desk(request).engine, label_id, user=user.name,
                     action=body.action, version=body.version, key=body.key,  # type: ignore[arg-type]
                     fields=body.fields, note=body.note, lease=_desk(request).settings.lease)
    return JSONResponse(d.model_dump(mode="json"), status_code=200 if d.replayed else 201)


@router.post("/api/undo")
def api_undo(request: Request, user: CurrentUser,
             body: Annotated[dict[str, Any], Body()]) -> JSONResponse:
    """{key} → the undo decision for this user's latest live decision."""
    d = queue.undo_last(_desk(request).engine, user=user.name, key=body.get("key"))
    return JSONResponse(d.model_dump(mode="json"), status_code=200 if d.replayed else 201)
