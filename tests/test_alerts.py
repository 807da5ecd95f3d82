"""Webhook delivery to a real HTTP receiver on 127.0.0.1: signatures, retries, dead receivers."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select
from standardwebhooks import Webhook

from classifier import alerts, queue
from classifier.config import AlertConfig
from classifier.store import write
from classifier.store.engine import utcnow
from classifier.store.tables import webhook_deliveries, webhook_events
from tests.ledger_seed import add_label

SECRET = "whsec_" + base64.b64encode(b"a 32-byte secret for the tests!!").decode()


class Receiver:
    """A local webhook receiver answering a scripted list of statuses (then 200)."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def closed_port_url() -> str:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connections are refused
    return f"http://127.0.0.1:{port}/hook"


def queue_trigger_label(engine, trigger: str | None = "above-85") -> tuple[int, int | None]:
    """A label proposing a trigger, stored and queued the way stage 5 does it (one transaction)."""
    with write(engine) as conn:
        label_id = add_label(conn, trigger=trigger, title="Third-party eval confirms parity")
        event_id = alerts.on_label_queued(conn, label_id)
    return label_id, event_id


def test_signed_candidate_event_verifies(engine, receiver):
    label_id, event_id = queue_trigger_label(engine)
    assert event_id is not None
    hook = AlertConfig(url=receiver.url, secret=SECRET)
    counts = alerts.deliver_pending(engine, [hook])
    assert (counts.attempted, counts.delivered) == (1, 1)
    ((headers, body),) = receiver.requests
    # verified by the Standard Webhooks reference library, not by our own code
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "trigger.candidate"
    assert payload["data"]["label_id"] == label_id
    assert payload["data"]["trigger"]["id"] == "above-85"
    assert headers["webhook-id"].startswith("msg_")
    assert headers["webhook-signature"].startswith("v1,")
    with engine.connect() as conn:
        assert conn.execute(select(webhook_events.c.state)).scalar_one() == "delivered"


def test_raw_text_secret_signs_with_its_bytes(engine, receiver):
    queue_trigger_label(engine)
    alerts.deliver_pending(engine, [AlertConfig(url=receiver.url, secret="plain words")])
    ((headers, body),) = receiver.requests
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(b"plain words", signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == f"v1,{expected}"


def test_label_without_trigger_emits_nothing(engine, receiver):
    _, event_id = queue_trigger_label(engine, trigger=None)
    assert event_id is None
    alerts.deliver_pending(engine, [AlertConfig(url=receiver.url, secret=SECRET)])
    assert receiver.requests == []


def test_500_then_200_is_sent_once_more_and_only_once(engine):
    rec = Receiver([500])
    try:
        queue_trigger_label(engine)
        hooks = [AlertConfig(url=rec.url, secret=SECRET)]
        t0 = utcnow()
        first = alerts.deliver_pending(engine, hooks, now=t0)
        assert (first.attempted, first.failed_attempts) == (1, 1)
        early = alerts.deliver_pending(engine, hooks, now=t0 + timedelta(seconds=1))
        assert (early.attempted, early.waiting) == (0, 1)  # backoff: not due yet
        second = alerts.deliver_pending(engine, hooks, now=t0 + timedelta(seconds=6))
        assert (second.attempted, second.delivered) == (1, 1)
        for later in (timedelta(minutes=10), timedelta(days=2)):
            assert alerts.deliver_pending(engine, hooks, now=t0 + later).attempted == 0
        assert len(rec.requests) == 2
        (h1, b1), (h2, b2) = rec.requests
        assert h1["webhook-id"] == h2["webhook-id"] and b1 == b2  # the same message, retried
        Webhook(SECRET).verify(b2, h2)
        with engine.connect() as conn:
            rows = conn.execute(select(webhook_deliveries).order_by(webhook_deliveries.c.id)).all()
            state = conn.execute(select(webhook_events.c.state)).scalar_one()
        assert [(r.attempt, r.ok, r.status_code) for r in rows] == [(1, False, 500), (2, True, 200)]
        assert rows[0].next_attempt_at is not None and rows[1].next_attempt_at is None
        assert state == "delivered"
    finally:
        rec.close()


def test_gives_up_after_the_schedule(engine):
    rec = Receiver([500, 502, 503])
    try:
        queue_trigger_label(engine)
        hooks = [AlertConfig(url=rec.url, secret=SECRET)]
        t0 = utcnow()
        for i in range(4):
            alerts.deliver_pending(engine, hooks, now=t0 + timedelta(hours=i), schedule=(0, 60))
        assert len(rec.requests) == 2
        with engine.connect() as conn:
            assert conn.execute(select(webhook_events.c.state)).scalar_one() == "failed"
    finally:
        rec.close()


def test_unreachable_receiver_leaves_the_queue_working(engine):
    dead = AlertConfig(url=closed_port_url(), secret=SECRET)
    label_id, _ = queue_trigger_label(engine)
    counts = alerts.deliver_pending(engine, [dead])
    assert (counts.attempted, counts.failed_attempts, counts.delivered) == (1, 1, 0)
    with engine.connect() as conn:
        row = conn.execute(select(webhook_deliveries)).one()
        items, total = queue.list_queue(conn, queue.QueueFilter())
    assert row.ok is False and row.status_code is None and "Connect" in row.error
    assert row.next_attempt_at is not None  # will be retried later
    # the queue goes on: the candidate is listed first and an editor can decide it
    assert total == 1 and items[0].label_id == label_id and items[0].trigger == "above-85"
    d = queue.decide(engine, label_id, user="ed", action="approve", version=1)
    assert d.to_state == "approved"
    with engine.connect() as conn:
        states = conn.execute(select(webhook_events.c.state)).scalars().all()
    assert "pending" in states


def test_approval_of_a_trigger_label_emits_an_approved_event(engine, receiver):
    label_id, _ = queue_trigger_label(engine)
    queue.decide(engine, label_id, user="ed", action="approve", version=1, note="confirmed")
    alerts.deliver_pending(engine, [AlertConfig(url=receiver.url, secret=SECRET)])
    types = [json.loads(b)["type"] for _, b in receiver.requests]
    assert types == ["trigger.candidate", "trigger.approved"]
    approved = json.loads(receiver.requests[1][1])["data"]
    assert approved["decision"]["user"] == "ed" and approved["final"]["trigger"] == "above-85"
    assert approved["decision"]["note"] == "confirmed"


def test_rejection_skip_and_undo_emit_nothing(engine):
    label_id, _ = queue_trigger_label(engine)
    queue.decide(engine, label_id, user="ed", action="skip", version=1)
    queue.decide(engine, label_id, user="ed", action="reject", version=2)
    queue.undo_last(engine, user="ed")
    with engine.connect() as conn:
        types = conn.execute(select(webhook_events.c.type)).scalars().all()
    assert types == ["trigger.candidate"]


def test_correction_that_adds_a_trigger_emits_approved(engine):
    with write(engine) as conn:
        label_id = add_label(conn)  # the labeler proposed no trigger
    fields = {"relevant": True, "evidence_type": "direct", "direction": "supports",
              "strength": "strong", "trigger": "above-85"}
    queue.decide(engine, label_id, user="ed", action="correct", version=1, fields=fields)
    with engine.connect() as conn:
        (event,) = conn.execute(select(webhook_events)).all()
    assert event.type == "trigger.approved"
    assert event.payload["data"]["decision"]["action"] == "correct"


def test_receiver_subscribed_to_other_events_gets_nothing(engine, receiver):
    queue_trigger_label(engine)
    hook = AlertConfig(url=receiver.url, secret=SECRET, events=["trigger.approved"])
    alerts.deliver_pending(engine, [hook])
    assert receiver.requests == []
    with engine.connect() as conn:
        assert conn.execute(select(webhook_events.c.state)).scalar_one() == "unsubscribed"


def test_send_test_reports_each_receiver(engine, receiver):
    hooks = [AlertConfig(url=receiver.url, secret=SECRET),
             AlertConfig(url=closed_port_url(), secret=SECRET)]
    results = alerts.send_test(engine, hooks)
    assert [(r["url"], r["ok"]) for r in results] == [(hooks[0].url, True), (hooks[1].url, False)]
    ((headers, body),) = receiver.requests
    assert Webhook(SECRET).verify(body, headers)["type"] == "test"


def test_cli_alerts_test_and_log(engine, db_url, tmp_path, receiver):
    from click.testing import CliRunner

    from classifier.cli import main
    feeds = tmp_path / "feeds.toml"
    feeds.write_text(f'[[alert]]\nurl = "{receiver.url}"\nsecret = "{SECRET}"\n', encoding="utf-8")
    out = CliRunner().invoke(main, ["alerts", "test", "--db", db_url, "--feeds", str(feeds)])
    assert out.exit_code == 0, out.output
    assert out.output.startswith("ok") and len(receiver.requests) == 1
    out = CliRunner().invoke(main, ["alerts", "log", "--json", "--db", db_url,
                                    "--feeds", str(feeds)])
    (row,) = json.loads(out.output)
    assert row["type"] == "test" and row["ok"] is True and row["attempt"] == 1
    feeds.write_text(f'[[alert]]\nurl = "{closed_port_url()}"\nsecret = "{SECRET}"\n',
                     encoding="utf-8")
    out = CliRunner().invoke(main, ["alerts", "test", "--db", db_url, "--feeds", str(feeds)])
    assert out.exit_code == 1 and "FAILED" in out.output


def test_labeling_a_trigger_candidate_queues_an_event(engine, receiver):
    # stage 5 for real (scripted backend): the label and its event commit together
    from classifier.backends import ScriptedBackend
    from classifier.config import ThesesFile
    from classifier.label import label_pending
    from tests.label_fixtures import GOOD, THESIS, add_pair

    add_pair(engine, n=1)
    add_pair(engine, n=2)
    trigger_label = GOOD.model_copy(update={"trigger": "above-85"})
    counts = label_pending(engine, ThesesFile(thesis=[THESIS]),
                           ScriptedBackend([trigger_label, GOOD]))
    assert counts.labeled == 2
    with engine.connect() as conn:
        events = conn.execute(select(webhook_events)).all()
    assert [e.type for e in events] == ["trigger.candidate"]
    alerts.deliver_pending(engine, [AlertConfig(url=receiver.url, secret=SECRET)])
    ((headers, body),) = receiver.requests
    data = Webhook(SECRET).verify(body, headers)["data"]
    assert data["trigger"]["condition"].startswith("A third-party evaluation")
    assert data["label"]["evidence_type"] == "direct"


def test_delivery_loop_sends_within_its_interval(engine, receiver):
    queue_trigger_label(engine)
    loop = alerts.DeliveryLoop(engine, [AlertConfig(url=receiver.url, secret=SECRET)],
                               every_s=0.05).start()
    try:
        for _ in range(200):  # wait for the event, not for a time: no timing assertion
            if receiver.requests:
                break
            threading.Event().wait(0.05)
    finally:
        loop.stop()
    assert len(receiver.requests) == 1 and loop.passes >= 1
