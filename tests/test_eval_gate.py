"""The eval runner (resume), the CLI gate (lowered score, changed gold, --update rules) and
`evidence gold export`, with the scripted backend standing in for a model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import classifier.backends as backends
from classifier.backends import ScriptedBackend
from classifier.cli import main
from classifier.config import load_theses
from classifier.errors import ConfigError, TransportError
from classifier.evaluation.gold import load_gold
from classifier.evaluation.runner import load_results, run_eval
from classifier.records import Label

ROOT = Path(__file__).resolve().parent.parent
THESES = str(ROOT / "theses.toml")
SEED = ROOT / "eval" / "gold" / "seed.jsonl"
N = 8  # items of the seed set the tests use


@pytest.fixture
def gold_file(tmp_path) -> Path:
    """The first N seed items, as their own gold file."""
    p = tmp_path / "gold.jsonl"
    p.write_text("".join(SEED.read_text(encoding="utf-8").splitlines(keepends=True)[:N]),
                 encoding="utf-8")
    return p


def answers(path: Path, wrong: int = 0) -> list[Label]:
    """Gold file → one scripted answer per item, right except the first `wrong` ones."""
    items = load_gold([path], load_theses(THESES))
    out = []
    for k, it in enumerate(items):
        g = it.gold
        if k < wrong:  # flip relevance: every field wrong
            lab = Label(relevant=True, evidence_type="direct", direction="supports",
                        strength="weak", confidence=0.9, rationale="x") if not g.relevant else \
                Label(relevant=False, confidence=0.9, rationale="x")
        else:
            lab = Label(relevant=g.relevant, evidence_type=g.evidence_type, direction=g.direction,
                        strength=g.strength, trigger=g.trigger, confidence=0.8, rationale="x",
                        quotes=[it.text.split("\n")[0][:60]] if g.relevant else [])
        out.append(lab)
    return out


class Scripted:
    """Makes `get_backend` hand out one pre-filled scripted backend (what the CLI will use)."""

    def __init__(self, monkeypatch) -> None:
        self.backend = ScriptedBackend()
        monkeypatch.setattr(backends, "get_backend",
                            lambda spec=None, settings=None, **_: self.backend)

    def load(self, items: list) -> None:
        self.backend.enqueue(items)


def gate(tmp_path, gold_file, *args: str):
    runner = CliRunner()
    return runner.invoke(main, ["eval", "gate", "--model", "scripted", "--theses", THESES,
                                "--gold", str(gold_file), "--baseline", str(tmp_path / "base.json"),
                                "--resamples", "50", *args], catch_exceptions=False)


def test_gate_update_pass_and_fail_on_lowered_score(tmp_path, gold_file, monkeypatch):
    s = Scripted(monkeypatch)
    r = gate(tmp_path, gold_file)
    assert r.exit_code == 1 and "no baseline yet" in r.output
    s.load(answers(gold_file))
    r = gate(tmp_path, gold_file, "--update", "--out", str(tmp_path / "r1"))
    assert r.exit_code == 0, r.output
    base = json.loads((tmp_path / "base.json").read_text())
    assert base["measured"]["exact_match"]["value"] == 1.0
    assert base["floors"]["relevant.accuracy"] == 0.75  # 1.0 - max(0.05, 2/8)
    assert base["ceilings"]["failure_rate"] == 0.25
    assert len(base["gold_sha256"]) == 64

    s.load(answers(gold_file))  # same answers: passes
    r = gate(tmp_path, gold_file, "--out", str(tmp_path / "r2"))
    assert r.exit_code == 0, r.output
    assert "gate passed" in r.output

    s.load(answers(gold_file, wrong=3))  # relevance 5/8 = 0.625 < floor 0.75
    r = gate(tmp_path, gold_file, "--out", str(tmp_path / "r3"))
    assert r.exit_code == 1
    assert "GATE FAILED: relevant.accuracy = 0.625 < floor 0.750" in r.output

    s.load(answers(gold_file, wrong=3))  # --update may not lower a floor ...
    r = gate(tmp_path, gold_file, "--update", "--out", str(tmp_path / "r4"))
    assert r.exit_code == 1 and "UPDATE REFUSED" in r.output
    assert json.loads((tmp_path / "base.json").read_text()) == base
    s.load(answers(gold_file, wrong=3))  # ... unless told to
    r = gate(tmp_path, gold_file, "--update", "--allow-regression", "--out", str(tmp_path / "r5"))
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "base.json").read_text())["floors"]["relevant.accuracy"] < 0.75

    s.load(answers(gold_file))  # a better run under --update keeps floors at least as high
    r = gate(tmp_path, gold_file, "--update", "--out", str(tmp_path / "r6"))
    assert r.exit_code == 0
    assert json.loads((tmp_path / "base.json").read_text())["floors"]["relevant.accuracy"] == 0.75


def test_gate_fails_on_changed_gold_without_running_the_model(tmp_path, gold_file, monkeypatch):
    s = Scripted(monkeypatch)
    s.load(answers(gold_file))
    assert gate(tmp_path, gold_file, "--update", "--out", str(tmp_path / "r1")).exit_code == 0
    lines = gold_file.read_text(encoding="utf-8").splitlines(keepends=True)
    obj = json.loads(lines[0])
    obj["label"]["strength"] = "moderate"  # an edited gold label
    gold_file.write_text(json.dumps(obj) + "\n" + "".join(lines[1:]), encoding="utf-8")
    s.load(answers(gold_file))
    r = gate(tmp_path, gold_file, "--out", str(tmp_path / "r2"))
    assert r.exit_code == 1 and "the gold set changed" in r.output
    assert len(s.backend) == N  # nothing was labeled


def test_run_resumes_without_relabeling_and_retries_transport(tmp_path, gold_file):
    items = load_gold([gold_file], load_theses(THESES))
    labels = answers(gold_file)
    b = ScriptedBackend(labels[:3])
    run_eval(items, b, tmp_path / "run", gold={"files": [str(gold_file)]}, limit=3, n_resamples=20)
    assert len(load_results(tmp_path / "run")) == 3 and len(b) == 0
    # item 4 hits a transport fault; the rest are labeled
    b.enqueue([TransportError("server down", attempts=4)] + labels[4:])
    rec = run_eval(items, b, tmp_path / "run", gold={"files": [str(gold_file)]}, n_resamples=20)
    assert rec["status"] == "done" and rec["metrics"]["n_failed"] == 1
    assert rec["metrics"]["errors"] == {"transport:transport": 1}
    # resuming again retries only the transport failure
    b.enqueue([labels[3]])
    rec = run_eval(items, b, tmp_path / "run", gold={"files": [str(gold_file)]}, n_resamples=20)
    assert len(b) == 0 and rec["metrics"]["n_failed"] == 0
    assert rec["metrics"]["figures"]["exact_match"]["value"] == 1.0
    assert [s["labeled"] for s in rec["sessions"]] == [3, 5, 1]
    # a different model in the same folder is refused
    with pytest.raises(ConfigError, match="different run"):
        run_eval(items, ScriptedBackend(model="other"), tmp_path / "run", gold={})


def test_eval_run_cli_writes_record_and_reports(tmp_path, gold_file, monkeypatch):
    s = Scripted(monkeypatch)
    s.load(answers(gold_file, wrong=2)[:-1] + ["not json", "not json", "not json"])
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["eval", "run", "--theses", THESES, "--gold", str(gold_file),
                                  "--model", "scripted", "--out", str(out), "--resamples", "50"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rec = json.loads((out / "run.json").read_text())
    assert rec["config"]["model"] == "scripted:scripted" and len(rec["config"]["prompt_hash"]) == 64
    assert rec["config"]["gold"]["sha256"] and rec["metrics"]["n_failed"] == 1
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == N and preds[-1]["error_type"].startswith("invalid:")
    md = (out / "report.md").read_text()
    assert "| exact_match |" in md and "img/confusion_direction.png" in md
    assert (out / "img" / "reliability.png").stat().st_size > 1000
    assert "<img src=\"img/reliability.png\"" in (out / "report.html").read_text()
    cmp = CliRunner().invoke(main, ["eval", "compare", str(out), str(out), "--resamples", "20"])
    assert cmp.exit_code == 0 and "0 items changed label" in cmp.output


def test_gold_export_from_editors_decisions(engine, corpora, tmp_path):
    from classifier import queue
    from tests.review_seed import fnc_articles, seed
    ids = seed(engine, list(fnc_articles(corpora, 2)), theses=("oss-parity", "ev-share-eu"))
    a, b, c, d = ids
    queue.decide(engine, a, user="ann", action="approve", version=1)
    fields = {"relevant": True, "evidence_type": "circumstantial", "direction": "neutral",
              "strength": "weak", "trigger": None}
    queue.decide(engine, b, user="ann", action="correct", version=1, fields=fields)
    queue.decide(engine, c, user="bob", action="reject", version=1, note="off topic")
    # d stays pending: not gold
    out = tmp_path / "review.jsonl"
    url = engine.url.render_as_string(hide_password=False)
    r = CliRunner().invoke(main, ["gold", "export", "--db", url, "--since", "2000-01-01",
                                  "--out", str(out)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["id"] for x in rows] == [f"review-{a}", f"review-{b}", f"review-{c}"]
    assert all(x["source"] == "review" and x["article"]["text"] for x in rows)
    assert rows[1]["label"] == fields
    assert rows[2]["label"]["relevant"] is False
    items = load_gold([out], load_theses(THESES))  # accepted like any gold file
    assert [i.origin for i in items] == ["review"] * 3
    later = CliRunner().invoke(main, ["gold", "export", "--db", url, "--since", "2999-01-01"])
    assert later.exit_code == 0 and later.output == ""


def test_gate_update_from_an_interrupted_run_widens_bounds(tmp_path, gold_file, monkeypatch):
    s = Scripted(monkeypatch)
    items = load_gold([gold_file], load_theses(THESES))
    labels = answers(gold_file, wrong=1)
    run_eval(items, ScriptedBackend(labels[:5]), tmp_path / "run", gold={}, limit=5,
             n_resamples=20)
    r = gate(tmp_path, gold_file, "--update", "--out", str(tmp_path / "run"))
    assert r.exit_code == 1  # without --allow-partial it would label the rest: queue is empty
    r = gate(tmp_path, gold_file, "--update", "--allow-partial", "--out", str(tmp_path / "run"))
    assert r.exit_code == 0, r.output
    base = json.loads((tmp_path / "base.json").read_text())
    assert base["partial"] is True and (base["measured_items"], base["gold_items"]) == (5, N)
    acc = base["measured"]["relevant.accuracy"]
    assert acc["value"] == 0.8
    assert base["floors"]["relevant.accuracy"] <= min(acc["ci"][0], 0.8 - 2 / 5) + 1e-9
    assert len(s.backend) == 0
