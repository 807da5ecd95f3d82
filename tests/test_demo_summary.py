"""The end of `evidence demo`: every pair the demo can route has an expected label, the summary
puts the scripted labels beside them and counts agreement right (with deliberate disagreements),
`--json` carries the same summary, and the demo's `demo` editor gets a fresh password each run."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from classifier import backends, users
from classifier.backends.scripted import ScriptedBackend
from classifier.cli import main
from classifier.config import Settings
from classifier.demo import DEMO_DATA, DEMO_USER, demo_login, demo_theses, had_demo_user, run_demo
from classifier.demo_summary import EXPECTED_FILE, load_expected, page_key, summarize
from classifier.errors import ConfigError
from classifier.records import Label
from classifier.store.tables import articles, pairs
from tests.conftest import ROOT
from tests.web_support import free_port, serving

QWEN = "Open-weights Qwen 4 ties the best closed model on SWE-bench Verified in independent run"
AUDIT = "Independent audit: open models trail closed frontier by widest margin in a year"
LLAMA = "Llama trekking boom lifts remote Andean villages"
PREMIUM = "German electric car sales slide after purchase premium expires"
# (title, thesis) → the scripted label's fields that deliberately differ from the expected ones
WRONG = {
    (QWEN, "oss-parity"): {"direction": "undermines"},  # direction only
    (AUDIT, "oss-parity"): {"direction": "supports", "trigger": None},  # a missed undermining pair
    (LLAMA, "oss-parity"): {"relevant": True, "evidence_type": "direct", "direction": "supports",
                            "strength": "weak"},  # the animal taken for the model
    (PREMIUM, "ev-share-eu"): {"strength": "strong"},  # still caught as undermining
}


def scripted_answers() -> dict[tuple[str, str], Label]:
    """Expected labels → the Label the scripted backend gives for each pair, WRONG applied."""
    out = {}
    for (_, thesis), e in load_expected().items():
        fields = e.label.model_dump() | WRONG.get((e.title, thesis), {})
        out[(e.title, thesis)] = Label(**fields, confidence=0.8, rationale="Scripted.")
    return out


class ByPair(ScriptedBackend):
    """The scripted backend, fed as it goes: before each request it enqueues the Label scripted
    for that (article, thesis), so the answers do not depend on the order pairs are labeled."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = scripted_answers()

    def label(self, request, record):  # type: ignore[no-untyped-def]
        self.enqueue([self.answers[(request.title, request.thesis.id)]])
        return super().label(request, record)


@pytest.fixture
def scripted(monkeypatch) -> ByPair:
    """Makes `get_backend` (what `evidence demo --model scripted` calls) hand out a ByPair."""
    backend = ByPair()
    monkeypatch.setattr(backends, "get_backend", lambda spec=None, settings=None, **_: backend)
    return backend


def agreement(items) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    return {a["field"] if isinstance(a, dict) else a.field:
            (a["agree"], a["total"]) if isinstance(a, dict) else (a.agree, a.total)
            for a in items}


def test_expected_labels_cover_every_pair_the_demo_can_route(engine):
    expected = load_expected()
    rep = run_demo(engine, Settings())  # --model none: stages 1-4
    with engine.connect() as conn:
        rows = conn.execute(select(articles.c.url, articles.c.title, pairs.c.thesis_id,
                                   pairs.c.state)
                            .join(articles, articles.c.id == pairs.c.article_id)).all()
    # every stored article × every demo thesis has a pair row (sent or skipped with a score) ...
    theses = {t.id for t in demo_theses().thesis}
    assert rep.articles == 20 and len(rows) == 20 * len(theses)
    keys = {(page_key(r.url), r.thesis_id) for r in rows}
    # ... and an expected label: what is routed today and what a changed threshold could route
    assert keys - set(expected) == set()
    assert set(expected) - keys == set(), "expected labels for pages the demo no longer stores"
    for r in rows:
        assert expected[(page_key(r.url), r.thesis_id)].title == r.title
    assert sum(r.state == "pending" for r in rows) == 25
    # every page file of the demo set (but the garbage one) and the 404 entry are keyed
    pages = {str(p.relative_to(DEMO_DATA / "pages")) for p in (DEMO_DATA / "pages").rglob("*.html")}
    assert {p for p, _ in expected} == (pages - {"wire/2026/11/markets-live.html"}) | {
        "northwind/2026/11/meta-llama-5-open-release.html"}
    # the labels follow the spec's cross-field rules and name only the thesis's own triggers
    triggers = {t.id: {tr.id for tr in t.trigger} for t in demo_theses().thesis}
    for (page, thesis), e in expected.items():
        assert e.label.trigger is None or e.label.trigger in triggers[thesis], (page, thesis)
        assert e.why, (page, thesis)


def test_load_expected_names_a_bad_line(tmp_path):
    bad = tmp_path / "expected.jsonl"
    good = EXPECTED_FILE.read_text(encoding="utf-8").splitlines()[0]
    bad.write_text(good + "\n" + good.replace('"relevant": false', '"relevant": true') + "\n")
    with pytest.raises(ConfigError, match=r"expected.jsonl:2: bad expected label"):
        load_expected(bad)
    bad.write_text(good + "\n" + good + "\n")
    with pytest.raises(ConfigError, match="second expected label"):
        load_expected(bad)


def test_summary_counts_agreement_with_deliberate_disagreements(engine):
    run_demo(engine, Settings(), backend=ByPair())
    with engine.connect() as conn:
        s = summarize(conn, demo_theses())
    assert (s.labeled, s.failed, s.pending) == (25, 0, 0)
    oss = next(t for t in s.theses if t.thesis_id == "oss-parity")
    assert len(oss.pairs) == 9
    marks = {v.title: v.differs for v in oss.pairs}
    assert marks[QWEN] == ("direction",)
    assert marks[AUDIT] == ("direction", "trigger")
    assert marks[LLAMA] == ("relevant", "evidence_type", "direction", "strength")
    assert sum(bool(d) for d in marks.values()) == 3
    # 9 pairs, 6 of them relevant by the expected labels (LLAMA is not: it leaves the relevant
    # denominators alone and costs only `relevant` and the all-fields match)
    assert agreement(oss.agreement) == {
        "relevant": (8, 9), "evidence_type": (6, 6), "direction": (4, 6), "strength": (6, 6),
        "trigger": (8, 9), "all": (6, 9)}
    assert (oss.undermines_expected, oss.undermines_caught) == (2, 1)  # the audit was missed
    # over all 25 routed pairs: 14 relevant; PREMIUM's strength is the fourth disagreement
    assert agreement(s.agreement) == {
        "relevant": (24, 25), "evidence_type": (14, 14), "direction": (12, 14),
        "strength": (13, 14), "trigger": (24, 25), "all": (21, 25)}
    assert (s.undermines_expected, s.undermines_caught) == (5, 4)
    # the ledger, by hand: expected = 75% × LR(Qwen 3) / 3 (audit) × 2.0 (DeepSeek's own scores,
    # direct moderate) × 1.1 / 1.1 (Mistral);
    # proposed: Qwen and the audit swap signs and cancel, the llamas add a weak direct 1.3
    odds = 0.75 / 0.25
    assert oss.ledger.prior == 0.75
    assert math.isclose(oss.ledger.expected, odds * 2.0 / (1 + odds * 2.0))
    assert math.isclose(oss.ledger.proposed, odds * 2.6 / (1 + odds * 2.6))
    assert (oss.ledger.counted_expected, oss.ledger.counted_proposed) == (6, 7)
    ev = next(t for t in s.theses if t.thesis_id == "ev-share-eu")
    assert ev.ledger.proposed < ev.ledger.expected  # a strong undermining proposal


def test_cli_prints_the_summary_and_the_login(tmp_path, monkeypatch, scripted):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["demo", "--model", "scripted"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "oss-parity: Open-source frontier parity" in out
    assert ("Agreement: relevant 8 of 9 pairs, type 6 of 6 relevant pairs, direction 4 of 6 "
            "relevant pairs, strength 6 of 6 relevant pairs, trigger 8 of 9 pairs, all fields 6 of "
            "9 pairs.") in out
    assert "Undermining pairs caught: 1 of 2." in out
    assert re.search(r"^The run took \d+ s \(fetch to label, 3 theses, 25 pairs labeled\)\.$", out,
                     re.MULTILINE), out[-600:]
    assert ("every label approved as proposed → 89% (7 items), the expected labels → 86% (6 "
            "items): the labeler's differences would put it 3 points too high.") in out
    assert "✗ dir,trig" in out and "✗ rel,type,dir,str" in out
    assert "direction 12 of 14 relevant pairs" in out and "Undermining pairs caught: 4 of 5." in out
    line = next(ln for ln in out.splitlines() if ln.startswith("Sign in as demo, password "))
    password = line.split("password ", 1)[1].split(" ")[0]
    db = tmp_path / "demo.db"
    assert f"evidence serve --db sqlite:///{db} --theses {DEMO_DATA / 'theses.toml'}" in out
    assert "Replaced the password" not in out
    from classifier.store import connect
    eng = connect(f"sqlite:///{db}")
    try:
        assert users.authenticate(eng, DEMO_USER, password, ip="127.0.0.1") is not None
    finally:
        eng.dispose()


def test_cli_json_and_a_second_demo_replaces_the_password(tmp_path, monkeypatch, scripted):
    monkeypatch.chdir(tmp_path)
    first = CliRunner().invoke(main, ["demo", "--model", "scripted", "--json"])
    assert first.exit_code == 0, first.output
    data = json.loads(first.output)
    assert data["articles"] == 20 and data["counts"]["labels_new"] == 25
    assert isinstance(data["seconds"], float) and data["seconds"] > 0
    s = data["summary"]
    assert agreement(s["agreement"])["direction"] == (12, 14)
    assert (s["undermines_expected"], s["undermines_caught"]) == (5, 4)
    oss = next(t for t in s["theses"] if t["thesis_id"] == "oss-parity")
    audit = next(p for p in oss["pairs"] if p["title"] == AUDIT)
    assert audit["proposed"]["direction"] == "supports"
    assert audit["expected"] == {"relevant": True, "evidence_type": "direct",
                                 "direction": "undermines", "strength": "strong",
                                 "trigger": "below-60"}
    assert audit["differs"] == ["direction", "trigger"] and audit["confidence"] == 0.8
    assert round(oss["ledger"]["expected"], 3) == 0.857
    assert data["login"]["name"] == "demo" and data["login"]["replaced"] is False
    assert data["desk"]["command"].startswith(f"evidence serve --db sqlite:///{tmp_path}")
    old = data["login"]["password"]
    assert had_demo_user(tmp_path / "demo.db")

    second = CliRunner().invoke(main, ["demo", "--model", "none"])
    assert second.exit_code == 0, second.output
    assert "Replaced the password of the desk's demo editor" in second.output
    assert "Labels: not run (--model none)" in second.output
    line = next(ln for ln in second.output.splitlines() if ln.startswith("Sign in as demo"))
    new = line.split("password ", 1)[1].split(" ")[0]
    assert new != old and len(new) >= users.MIN_PASSWORD
    from classifier.store import connect
    eng = connect(f"sqlite:///{tmp_path / 'demo.db'}")
    try:
        assert users.authenticate(eng, DEMO_USER, old, ip="127.0.0.1") is None
        assert users.authenticate(eng, DEMO_USER, new, ip="127.0.0.1") is not None
    finally:
        eng.dispose()


def test_demo_login_replaces_an_existing_users_password_and_ends_sessions(engine):
    first = demo_login(engine)
    assert first.replaced is False
    user = users.authenticate(engine, DEMO_USER, first.password, ip="127.0.0.1")
    token, _ = users.open_session(engine, user)
    second = demo_login(engine)
    assert second.replaced is True and second.password != first.password
    assert users.authenticate(engine, DEMO_USER, first.password, ip="127.0.0.1") is None
    assert users.load_session(engine, token) is None  # signed out with the old password
    assert [u["name"] for u in users.list_users(engine)] == [DEMO_USER]


# `evidence demo --serve` in a subprocess, labeled by ByPair (the same scripted labels as above)
SERVE_SCRIPT = (
    "import sys; from classifier import backends; from tests.test_demo_summary import ByPair; "
    "b = ByPair(); backends.get_backend = lambda spec=None, settings=None, **_: b; "
    "from classifier.cli import main; main(sys.argv[1:], prog_name='evidence')")


@contextmanager
def demo_served(tmp_path: Path) -> Iterator[tuple[str, str, int]]:
    """`evidence demo --model scripted --serve` in tmp_path → (desk URL, demo password, port)."""
    port = free_port()
    out, err = tmp_path / "demo.out", tmp_path / "demo.err"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen([sys.executable, "-c", SERVE_SCRIPT, "demo", "--model", "scripted",
                                 "--serve", "--port", str(port)], cwd=tmp_path, env=env,
                                stdout=o, stderr=e)
    with serving(proc, f"http://127.0.0.1:{port}", what="evidence demo --serve", log=err,
                 timeout_s=120) as url:
        m = re.search(r"Sign in as demo, password (\S+) \(shown only now\)", out.read_text())
        assert m, out.read_text()
        assert f"Open {url}/ and sign in as demo" in out.read_text()
        yield url, m.group(1), port


def listening_addresses(port: int) -> set[str]:
    """Port → the local addresses sockets listen on for it (Linux /proc/net/tcp and tcp6)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not Path(table).exists():
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.rsplit(":", 1)
            if state == "0A" and int(hexport, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(addr)
                if len(raw) == 4:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:  # four little-endian 32-bit words
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_demo_serve_binds_loopback_only_and_the_demo_login_works(tmp_path):
    with demo_served(tmp_path) as (url, password, port):
        if Path("/proc/net/tcp").exists():
            assert listening_addresses(port) == {"127.0.0.1"}
        # another loopback address of this machine reaches nothing: not bound to 0.0.0.0
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.2:{port}/login", timeout=5)
        with httpx.Client(base_url=url) as http:
            form = http.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text).group(1)
            wrong = http.post("/login", data={"name": "demo", "password": password + "x",
                                              "csrf": csrf, "next": "/queue"})
            assert wrong.status_code == 401
            csrf = re.search(r'name="csrf" value="([^"]+)"', wrong.text).group(1)
            ok = http.post("/login", data={"name": "demo", "password": password, "csrf": csrf,
                                           "next": "/queue"})
            assert ok.status_code == 303 and ok.headers["location"] == "/queue"
            queue = http.get("/queue")
            assert queue.status_code == 200 and "Qwen 4 ties" in queue.text
