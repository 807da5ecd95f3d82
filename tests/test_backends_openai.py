"""The real `openai` backend (SDK + instructor + tenacity) against a local fake server's faults.

Each fault ends in its documented state with every attempt in llm_calls, and the next pair in
the same run is labeled normally.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from classifier.backends.openai_compat import OpenAIBackend
from classifier.config import LabelSettings, ThesesFile
from classifier.label import label_pending
from classifier.store.tables import labels, llm_calls, pairs, skips
from tests.fake_openai import FakeOpenAI, fake_openai  # noqa: F401  (fixture)
from tests.label_fixtures import GOOD, THESIS, add_pair

THESES = ThesesFile(thesis=[THESIS])
SETTINGS = LabelSettings(timeout_s=1.0, max_transport_attempts=3, retry_after_cap_s=5.0)
GOOD_RAW = json.dumps(json.loads(GOOD.model_dump_json()))


def answer(**changes: object) -> dict[str, str]:
    return {"answer": json.dumps({**json.loads(GOOD_RAW), **changes})}


def backend(fake: FakeOpenAI, mode: str | None = None, **kw: object) -> OpenAIBackend:
    settings = SETTINGS.model_copy(update={"openai_mode": mode, **kw})
    return OpenAIBackend("fake-model", settings=settings, base_url=fake.url, api_key="k")


def run(engine, fake: FakeOpenAI, steps: list[dict], **kw: object):
    """Two pairs; the first meets `steps`, the second gets a good answer."""
    first, second = add_pair(engine, n=1), add_pair(engine, n=2)
    fake.enqueue(steps + [{"answer": GOOD_RAW}])
    counts = label_pending(engine, THESES, backend(fake, **kw), settings=SETTINGS)
    with engine.connect() as c:
        p1 = c.execute(select(pairs).where(pairs.c.id == first)).mappings().one()
        p2 = c.execute(select(pairs.c.state).where(pairs.c.id == second)).scalar()
        calls = c.execute(select(llm_calls).where(llm_calls.c.pair_id == first)
                          .order_by(llm_calls.c.id)).mappings().all()
    assert p2 == "labeled", "the rest of the run must be unaffected"
    return counts, p1, calls


def test_good_answer_tools_mode_one_request(engine, fake_openai):
    counts, p1, calls = run(engine, fake_openai, [{"answer": GOOD_RAW}])
    assert p1["state"] == "labeled" and counts.labeled == 2 and len(calls) == 1
    req = fake_openai.requests[0]
    assert req["tools"] and req["temperature"] == 0 and req["model"] == "fake-model"
    assert list(req["tools"][0]["function"]["parameters"]["properties"])[0] == "rationale"
    assert calls[0]["tokens_in"] > 0 and calls[0]["error_type"] is None
    with engine.connect() as c:
        lab = c.execute(select(labels).where(labels.c.pair_id == p1["id"])).mappings().one()
    assert lab["backend"] == "openai" and lab["model"] == "fake-model" and lab["attempts"] == 1


def test_json_schema_mode_sends_response_format(engine, fake_openai):
    counts, p1, _ = run(engine, fake_openai, [{"answer": GOOD_RAW}], mode="json_schema")
    assert p1["state"] == "labeled"
    assert fake_openai.requests[0]["response_format"]["type"] == "json_schema"


def test_429_retry_after_is_honoured(engine, fake_openai):
    steps = [{"status": 429, "headers": {"Retry-After": "3"}, "message": "slow down"},
             {"answer": GOOD_RAW}]
    counts, p1, calls = run(engine, fake_openai, steps)
    assert p1["state"] == "labeled"
    assert [c["error_type"] for c in calls] == ["rate_limited", None]
    assert [c["attempt"] for c in calls] == [1, 2]
    assert fake_openai.times[1] - fake_openai.times[0] >= 2.9  # waited as told, not 1 s backoff


def test_500s_exhaust_transport_retries_pair_stays_pending(engine, fake_openai):
    counts, p1, calls = run(engine, fake_openai, [{"status": 500}] * 3)
    assert p1["state"] == "pending" and p1["error_type"] == "server_error"
    assert [c["error_type"] for c in calls] == ["server_error"] * 3  # SDK retries are off
    assert counts.deferred == 1 and counts.labeled == 1


def test_hang_past_timeout(engine, fake_openai):
    steps = [{"hang": 2.5, "then": {"answer": GOOD_RAW}}] * 3
    counts, p1, calls = run(engine, fake_openai, steps)
    assert p1["state"] == "pending" and p1["error_type"] == "timeout"
    assert [c["error_type"] for c in calls] == ["timeout"] * 3


def test_malformed_json_reasked_twice_then_failed(engine, fake_openai):
    counts, p1, calls = run(engine, fake_openai, [{"answer": '{"rationale": "x", '}] * 3)
    assert p1["state"] == "failed" and p1["error_type"] == "malformed_json"
    assert p1["last_raw"] == '{"rationale": "x", ' and len(calls) == 3
    assert all(c["error_type"] == "malformed_json" for c in calls)
    # the re-ask carried the validation error back to the model
    assert "Validation Error" in json.dumps(fake_openai.requests[1]["messages"]) or \
        "error" in json.dumps(fake_openai.requests[1]["messages"]).lower()
    with engine.connect() as c:
        assert c.execute(select(skips.c.reason)).scalar() == "malformed_json"


def test_schema_violation_is_reasked_and_fixed(engine, fake_openai):
    steps = [answer(relevant=False), {"answer": GOOD_RAW}]  # relevant=false + direction: invalid
    counts, p1, calls = run(engine, fake_openai, steps)
    assert p1["state"] == "labeled"
    assert [c["error_type"] for c in calls] == ["schema", None]
    assert "relevant=false requires" in calls[0]["error_detail"]


def test_quotes_not_in_text_fail_after_two_reasks(engine, fake_openai):
    bad = answer(quotes=["Open models now beat every closed model everywhere."])
    counts, p1, calls = run(engine, fake_openai, [bad] * 3)
    assert p1["state"] == "failed" and p1["error_type"] == "ungrounded_quote"
    assert [c["error_type"] for c in calls] == ["ungrounded_quote"] * 3
    assert "beat every closed model" in p1["last_raw"]
    assert "do not occur in the article text" in json.dumps(fake_openai.requests[1]["messages"])


def test_truncated_answer_fails_without_reask(engine, fake_openai):
    steps = [{"answer": GOOD_RAW[:40], "finish_reason": "length"}]
    counts, p1, calls = run(engine, fake_openai, steps)
    assert p1["state"] == "failed" and p1["error_type"] == "truncated"
    assert len(calls) == 1 and calls[0]["response"] == GOOD_RAW[:40]


def test_refusal_fails_without_reask(engine, fake_openai):
    counts, p1, calls = run(engine, fake_openai, [{"refusal": "I can't help with that."}])
    assert p1["state"] == "failed" and p1["error_type"] == "refusal"
    assert p1["last_raw"] == "I can't help with that." and len(calls) == 1


def test_unauthorized_stops_the_run_cleanly(engine, fake_openai):
    add_pair(engine, n=1)
    add_pair(engine, n=2)
    fake_openai.enqueue([{"status": 401, "message": "bad key"}])
    counts = label_pending(engine, THESES, backend(fake_openai), settings=SETTINGS)
    assert counts.stopped.startswith("backend unavailable") and counts.labeled == 0
    with engine.connect() as c:
        assert set(c.execute(select(pairs.c.state)).scalars()) == {"pending"}
    assert len(fake_openai.requests) == 1


def test_missing_key_and_url_is_backend_unavailable(monkeypatch):
    from classifier.errors import BackendUnavailable
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(BackendUnavailable, match="OPENAI_API_KEY"):
        OpenAIBackend("gpt-4o-mini")
