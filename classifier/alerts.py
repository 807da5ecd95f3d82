"""Trigger alerts: signed webhooks through an outbox, so a dead receiver never blocks the queue.

    label with a trigger enters the queue ─┐                    ┌─▶ POST receiver 1 ─▶ attempt row
    an editor approves a trigger label ────┼─▶ webhook_events ──┤    (retry on a schedule)
    `evidence alerts test` ────────────────┘  (same transaction) └─▶ POST receiver 2 ─▶ attempt row

`on_label_queued` / `on_label_decided` only INSERT an event row inside the caller's transaction;
`deliver_pending` sends due events after that transaction has committed (`evidence run`, `alerts
deliver`, or the `DeliveryLoop` thread of `evidence serve` and `evidence worker`) and records
every attempt. Requests follow the Standard
Webhooks spec (https://www.standardwebhooks.com/): headers `webhook-id` (stable across retries),
`webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature`
(`v1,` + base64 HMAC-SHA256 over `id.timestamp.body`, keyed by the base64-decoded `whsec_` secret).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Connection, Engine, and_, insert, or_, select, update

from classifier import USER_AGENT
from classifier.config import AlertConfig, ThesisConfig
from classifier.records import Record
from classifier.store.engine import as_utc, utcnow, write
from classifier.store.tables import (articles, decisions, labels, webhook_deliveries,
                                     webhook_events)

log = logging.getLogger(__name__)

# Seconds to wait before attempt n+1 (n = index): the Standard Webhooks reference schedule
# (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); eight attempts over about a day.
RETRY_SCHEDULE_S: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
TIMEOUT_S = 10.0  # a receiver that takes longer is a failed attempt, retried later
CLAIM_S = 120.0  # how long one deliverer holds an event before another may take it over
COUNTED = ("approved", "corrected")


class DeliveryCounts(Record):
    """What one `deliver_pending` pass did."""

    attempted: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    gave_up: int = 0
    waiting: int = 0  # receivers whose next attempt is not due yet


# ---------------------------------------------------------------------------------------------
# Signing (Standard Webhooks)
# ---------------------------------------------------------------------------------------------


def secret_key(secret: str) -> bytes:
    """Configured secret → HMAC key: base64-decoded after `whsec_`, else the text's UTF-8 bytes."""
    if secret.startswith("whsec_"):
        raw = secret[len("whsec_"):]
        return base64.b64decode(raw + "=" * (-len(raw) % 4))
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """Secret, message id, Unix timestamp, body → the `webhook-signature` value `v1,<base64>`."""
    mac = hmac.new(secret_key(secret), f"{msg_id}.{timestamp}.{body}".encode(), hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def body_of(payload: dict[str, Any]) -> str:
    """Event payload → the exact JSON text sent (and signed); the same on every retry."""
    return json.dumps(payload, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                      default=str)


# ---------------------------------------------------------------------------------------------
# Events into the outbox (inside the caller's transaction)
# ---------------------------------------------------------------------------------------------


def emit(conn: Connection, type_: str, data: dict[str, Any], *, label_id: int | None = None,
         thesis_id: str | None = None, url: str | None = None) -> int:
    """Event type and data → an outbox row (delivered after commit); returns its id."""
    now = utcnow()
    msg_id = f"msg_{uuid.uuid4().hex}"
    payload = {"type": type_, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data}
    return conn.execute(insert(webhook_events).values(
        msg_id=msg_id, type=type_, label_id=label_id, thesis_id=thesis_id, url=url,
        payload=payload, state="pending", created_at=now).returning(webhook_events.c.id)
    ).scalar_one()


def _label_data(conn: Connection, label_id: int, thesis: ThesisConfig | None,
                trigger_id: str) -> dict[str, Any]:
    row = conn.execute(
        select(labels, articles.c.title, articles.c.url, articles.c.published)
        .join(articles, articles.c.id == labels.c.article_id).where(labels.c.id == label_id)
    ).one()
    trigger: dict[str, Any] = {"id": trigger_id}
    if thesis is not None:
        for t in thesis.trigger:
            if t.id == trigger_id:
                trigger = {"id": t.id, "direction": t.direction, "to": t.to,
                           "condition": t.condition}
    published = as_utc(row.published)
    return {
        "label_id": label_id, "thesis_id": row.thesis_id, "trigger": trigger,
        "article": {"id": row.article_id, "title": row.title, "url": row.url,
                    "published": published.isoformat() if published else None},
        "label": {"evidence_type": row.evidence_type, "direction": row.direction,
                  "strength": row.strength, "confidence": row.confidence,
                  "rationale": row.rationale, "trigger": row.trigger},
        "review_state": row.review_state,
    }


def on_label_queued(conn: Connection, label_id: int, *,
                    thesis: ThesisConfig | None = None) -> int | None:
    """A label just stored for review → a `trigger.candidate` event if it proposes a trigger."""
    trigger = conn.execute(select(labels.c.trigger).where(labels.c.id == label_id)).scalar_one()
    if not trigger:
        return None
    data = _label_data(conn, label_id, thesis, trigger)
    return emit(conn, "trigger.candidate", data, label_id=label_id, thesis_id=data["thesis_id"])


def on_label_decided(conn: Connection, label_id: int, *,
                     thesis: ThesisConfig | None = None) -> int | None:
    """A decision just stored → a `trigger.approved` event if it approved a trigger label."""
    row = conn.execute(select(labels.c.review_state, labels.c.final)
                       .where(labels.c.id == label_id)).one()
    final = row.final if isinstance(row.final, dict) else {}
    if row.review_state not in COUNTED or not final.get("trigger"):
        return None
    decision = conn.execute(select(decisions).where(decisions.c.label_id == label_id)
                            .order_by(decisions.c.id.desc()).limit(1)).first()
    if decision is not None and decision.action not in ("approve", "correct"):
        return None  # an undo that restores an approval is not a new approval
    data = _label_data(conn, label_id, thesis, final["trigger"])
    data["final"] = final
    if decision is not None:
        decided_at = as_utc(decision.created_at)
        data["decision"] = {"id": decision.id, "action": decision.action,
                            "user": decision.user_name, "note": decision.note,
                            "at": decided_at.isoformat() if decided_at else None}
    return emit(conn, "trigger.approved", data, label_id=label_id, thesis_id=data["thesis_id"])


# ---------------------------------------------------------------------------------------------
# Delivery (after commit)
# ---------------------------------------------------------------------------------------------


def _claim(engine: Engine, now: datetime, limit: int) -> list[Any]:
    """Pending events → those this deliverer now holds (a conditional UPDATE per event)."""
    with write(engine) as conn:
        candidates = conn.execute(
            select(webhook_events.c.id).where(and_(
                webhook_events.c.state == "pending",
                or_(webhook_events.c.claim_until.is_(None), webhook_events.c.claim_until < now)))
            .order_by(webhook_events.c.id).limit(limit)).scalars().all()
        held = []
        for event_id in candidates:
            res = conn.execute(update(webhook_events).where(and_(
                webhook_events.c.id == event_id, webhook_events.c.state == "pending",
                or_(webhook_events.c.claim_until.is_(None), webhook_events.c.claim_until < now)))
                .values(claim_until=now + timedelta(seconds=CLAIM_S)))
            if res.rowcount == 1:
                held.append(event_id)
        return list(conn.execute(select(webhook_events)
                                 .where(webhook_events.c.id.in_(held))
                                 .order_by(webhook_events.c.id)).all()) if held else []


def _targets(event: Any, alerts: Sequence[AlertConfig]) -> list[AlertConfig]:
    if event.url is not None:
        return [a for a in alerts if a.url == event.url][:1]
    return [a for a in alerts if event.type in a.events]


def _post(client: httpx.Client, alert: AlertConfig, event: Any) -> tuple[int | None, str | None,
                                                                         float]:
    body = body_of(event.payload)
    ts = int(time.time())
    headers = {"content-type": "application/json", "user-agent": USER_AGENT,
               "webhook-id": event.msg_id, "webhook-timestamp": str(ts),
               "webhook-signature": sign(alert.secret, event.msg_id, ts, body)}
    started = time.perf_counter()
    try:
        resp = client.post(alert.url, content=body.encode(), headers=headers)
    except httpx.HTTPError as e:
        return None, f"{type(e).__name__}: {e}", (time.perf_counter() - started) * 1000
    ms = (time.perf_counter() - started) * 1000
    if 200 <= resp.status_code < 300:
        return resp.status_code, None, ms
    return resp.status_code, f"HTTP {resp.status_code}: {resp.text[:200]}", ms


def deliver_pending(engine: Engine, alerts: Sequence[AlertConfig], *, now: datetime | None = None,
                    transport: httpx.BaseTransport | None = None, timeout_s: float = TIMEOUT_S,
                    schedule: Sequence[float] = RETRY_SCHEDULE_S,
                    limit: int = 100) -> DeliveryCounts:
    """Due outbox events × configured receivers → POST each once, record every attempt.

    `now` decides which retries are due (tests move it forward); signatures always use the
    real clock, since receivers check the timestamp against theirs.
    """
    if not alerts:
        return DeliveryCounts()  # no receivers here: leave events for a deliverer that has them
    now = as_utc(now) or utcnow()
    counts = {"attempted": 0, "delivered": 0, "failed_attempts": 0, "gave_up": 0, "waiting": 0}
    events = _claim(engine, now, limit)
    timeout = httpx.Timeout(timeout_s, connect=min(5.0, timeout_s))
    with httpx.Client(timeout=timeout, follow_redirects=False, transport=transport) as client:
        for event in events:
            states = []
            for alert in _targets(event, alerts):
                states.append(_deliver_one(engine, client, alert, event, now, schedule, counts))
            if not states:
                final = "unsubscribed"
            elif all(s == "ok" for s in states):
                final = "delivered"
            elif all(s in ("ok", "gave_up") for s in states):
                final = "failed"
            else:
                final = "pending"
            with write(engine) as conn:
                conn.execute(update(webhook_events).where(webhook_events.c.id == event.id).values(
                    state=final, claim_until=None,
                    finished_at=None if final == "pending" else utcnow()))
    return DeliveryCounts(**counts)


def _deliver_one(engine: Engine, client: httpx.Client, alert: AlertConfig, event: Any,
                 now: datetime, schedule: Sequence[float], counts: dict[str, int]) -> str:
    with engine.connect() as conn:
        past = conn.execute(select(webhook_deliveries).where(and_(
            webhook_deliveries.c.event_id == event.id, webhook_deliveries.c.url == alert.url))
            .order_by(webhook_deliveries.c.attempt)).all()
    if any(p.ok for p in past):
        return "ok"
    if len(past) >= len(schedule):
        return "gave_up"
    if past and (past[-1].next_attempt_at is None or as_utc(past[-1].next_attempt_at) > now):
        counts["waiting"] += 1
        return "waiting"
    attempt = len(past) + 1
    status, error, ms = _post(client, alert, event)
    ok = error is None
    next_at = None
    if not ok and attempt < len(schedule):
        next_at = now + timedelta(seconds=schedule[attempt])
    with write(engine) as conn:
        conn.execute(insert(webhook_deliveries).values(
            event_id=event.id, url=alert.url, attempt=attempt, ok=ok, status_code=status,
            error=error, latency_ms=ms, next_attempt_at=next_at, created_at=utcnow()))
    counts["attempted"] += 1
    if ok:
        counts["delivered"] += 1
        return "ok"
    counts["failed_attempts"] += 1
    log.warning("webhook %s to %s failed (attempt %d): %s", event.msg_id, alert.url, attempt, error)
    if next_at is None:
        counts["gave_up"] += 1
        return "gave_up"
    return "waiting"


def deliver_in_background(engine: Engine, alerts: Sequence[AlertConfig]) -> threading.Thread | None:
    """Start a daemon thread that delivers due events now; None when no receiver is configured."""
    if not alerts:
        return None

    def run() -> None:
        try:
            deliver_pending(engine, alerts)
        except Exception:  # the thread has no caller to raise to; attempts already recorded
            log.exception("webhook delivery pass failed")

    thread = threading.Thread(target=run, name="webhook-delivery", daemon=True)
    thread.start()
    return thread


class DeliveryLoop:
    """A daemon thread that runs `deliver_pending` every `every_s` seconds until `stop()`.

    For `evidence alerts deliver --every N`, and for long-running processes (web server, worker)
    that want trigger alerts out within seconds of the decision that caused them.
    """

    def __init__(self, engine: Engine, alerts: Sequence[AlertConfig], *,
                 every_s: float = 5.0) -> None:
        self.engine, self.alerts, self.every_s = engine, list(alerts), every_s
        self._stop = threading.Event()
        self.passes = 0
        self.thread = threading.Thread(target=self._run, name="webhook-delivery-loop",
                                       daemon=True)

    def start(self) -> DeliveryLoop:
        """Start the thread (no-op without receivers); returns self."""
        if self.alerts:
            self.thread.start()
        return self

    def stop(self, timeout_s: float = 15.0, *, flush: bool = True) -> None:
        """End the loop after its current pass; with `flush`, one last pass for what is due now."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout_s)
        if flush and self.alerts:
            try:
                deliver_pending(self.engine, self.alerts)
            except Exception:
                log.exception("final webhook delivery pass failed")

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deliver_pending(self.engine, self.alerts)
            except Exception:  # a database hiccup: the next pass tries again
                log.exception("webhook delivery pass failed")
            self.passes += 1
            self._stop.wait(self.every_s)


def send_test(engine: Engine, alerts: Sequence[AlertConfig], *,
              transport: httpx.BaseTransport | None = None) -> list[dict[str, Any]]:
    """Configured receivers → one signed `test` event each, sent now; the attempt per receiver."""
    ids = []
    with write(engine) as conn:
        for alert in alerts:
            ids.append(emit(conn, "test", {"message": "evidence desk webhook test"},
                            url=alert.url))
    deliver_pending(engine, alerts, transport=transport)
    with engine.connect() as conn:
        rows = conn.execute(select(webhook_deliveries, webhook_events.c.msg_id)
                            .join(webhook_events,
                                  webhook_events.c.id == webhook_deliveries.c.event_id)
                            .where(webhook_deliveries.c.event_id.in_(ids))
                            .order_by(webhook_deliveries.c.id)).all()
    return [{"url": r.url, "msg_id": r.msg_id, "ok": r.ok, "status": r.status_code,
             "error": r.error, "latency_ms": round(r.latency_ms, 1)} for r in rows]


def recent_deliveries(conn: Connection, limit: int = 50) -> list[dict[str, Any]]:
    """Store → the latest delivery attempts, newest first (for `evidence alerts log`)."""
    rows = conn.execute(select(webhook_deliveries, webhook_events.c.msg_id, webhook_events.c.type,
                               webhook_events.c.state)
                        .join(webhook_events, webhook_events.c.id == webhook_deliveries.c.event_id)
                        .order_by(webhook_deliveries.c.id.desc()).limit(limit)).all()
    return [{"at": as_utc(r.created_at), "msg_id": r.msg_id, "type": r.type, "url": r.url,
             "attempt": r.attempt, "ok": r.ok, "status": r.status_code, "error": r.error,
             "event_state": r.state,
             "next_attempt_at": as_utc(r.next_attempt_at)} for r in rows]
