"""Learning from decisions with the real encoder: a few real fine-tuning steps on editors'
decisions, the gate on held-back decisions and the seed gold, promotion, refusal, rollback, and
pending labels re-scored by the active version."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from classifier import queue
from classifier.backends import get_backend
from classifier.cli import main
from classifier.config import LabelSettings, load_theses
from classifier.encoder import versions
from classifier.encoder.learn import LearnOptions, decision_items, held_back, learn
from classifier.errors import ConfigError
from classifier.label import label_pending
from classifier.store.tables import labels, model_versions
from tests.conftest import ROOT
from tests.label_fixtures import add_pair

TRAIN_ITEMS = ROOT / "eval" / "train" / "items.jsonl"
TRAIN_THESES = ROOT / "eval" / "train" / "theses.toml"
SEED = ROOT / "eval" / "gold" / "seed.jsonl"
ENCODER_ALONE = LabelSettings(llm="none")


@pytest.fixture
def desk(engine):
    """10 written items of two training theses, labeled by the combined labeler (encoder alone),
    8 decided by an editor as their gold says (approved when the proposal matches, else
    corrected), 2 left pending. → (engine, theses, the 10 gold records)."""
    theses = load_theses(TRAIN_THESES)
    keep = [t.id for t in theses.thesis[:2]]
    recs = [json.loads(x) for x in TRAIN_ITEMS.read_text(encoding="utf-8").splitlines() if x]
    chosen = [r for tid in keep for r in [x for x in recs if x["thesis"] == tid][:5]]
    for n, r in enumerate(chosen):
        add_pair(engine, n=n + 1, text=r["article"]["text"], title=r["article"]["title"],
                 thesis_id=r["thesis"])
    label_pending(engine, theses, get_backend("combined", ENCODER_ALONE), settings=ENCODER_ALONE)
    with engine.connect() as c:
        rows = c.execute(select(labels).order_by(labels.c.id)).all()
    assert len(rows) == 10
    for row, r in list(zip(rows, chosen, strict=True))[:8]:
        gold = {k: r["label"].get(k) for k in queue.JUDGED}
        if gold == queue.proposed(row):
            queue.decide(engine, row.id, user="ann", action="approve", version=row.version)
        else:
            queue.decide(engine, row.id, user="ann", action="correct", version=row.version,
                         fields=gold)
    return engine, theses, chosen


def _opts(tmp_path, name, **kw):
    """Learning options into tmp_path/name: one epoch, at most two steps."""
    return LearnOptions(out=tmp_path / name, **{"epochs": 1, "max_steps": 2, **kw})


def _pending(engine):
    with engine.connect() as c:
        return c.execute(select(labels).where(labels.c.review_state == "pending")
                         .order_by(labels.c.id)).mappings().all()


def test_decisions_become_items_and_a_fixed_share_is_held_back(desk):
    engine, theses, chosen = desk
    items, unknown = decision_items(engine, theses)
    assert (len(items), unknown) == (8, 0)
    assert all(d.item.origin == "review" and d.proposals["encoder"]["probs"] for d in items)
    back = [d for d in items if d.held_back]
    assert back and len(back) < len(items)
    assert all(held_back(d.item.thesis.id, d.label_id) for d in back)  # the same every time
    with pytest.raises(ConfigError, match="no decisions"):
        learn(engine, theses, LearnOptions(since=datetime(2999, 1, 1, tzinfo=UTC)))


def test_a_version_that_does_not_regress_is_promoted_and_pending_labels_follow_it(desk, tmp_path,
                                                                                 db_url):
    engine, theses, _ = desk
    shipped = versions.shipped_version()
    res = learn(engine, theses, _opts(tmp_path, "v1", lr=1e-8))  # two tiny steps: ~the parent
    assert res["parent"] == shipped and res["decisions"] + res["held_back"] == 8
    assert res["promoted"], res["gate"]
    assert set(res["gate"]["sets"]) == {"held-back-decisions"}
    assert versions.active(engine)["version"] == res["version"]
    card = json.loads((tmp_path / "v1" / "card.json").read_text())
    assert card["parent"] == shipped and card["metrics"]["gate"]["passed"]
    # the CLI re-scores pending labels after a promotion; here: `model use` does the same
    out = CliRunner().invoke(main, ["model", "use", res["version"], "--db", db_url,
                                    "--theses", str(TRAIN_THESES)])
    assert out.exit_code == 0, out.output
    assert "re-scored 2 pending labels" in out.output
    assert {r["encoder_version"] for r in _pending(engine)} == {res["version"]}
    assert all(r["version"] == 2 for r in _pending(engine))  # open forms on them are now stale
    listed = CliRunner().invoke(main, ["model", "list", "--json", "--db", db_url])
    data = json.loads(listed.output)
    assert data["active"] == res["version"] and data["shipped"] == shipped
    # rollback: the shipped model labels again and pending labels carry its version
    back = CliRunner().invoke(main, ["model", "use", "shipped", "--db", db_url,
                                     "--theses", str(TRAIN_THESES)])
    assert back.exit_code == 0, back.output
    assert versions.active(engine) is None
    assert {r["encoder_version"] for r in _pending(engine)} == {shipped}
    # decided labels keep the version that made them
    with engine.connect() as c:
        decided = c.execute(select(labels.c.encoder_version)
                            .where(labels.c.review_state != "pending")).scalars().all()
    assert set(decided) == {shipped}


def test_a_version_that_regresses_is_refused_and_the_active_one_stays(desk, tmp_path, db_url):
    engine, theses, _ = desk
    # every decision corrected to "not relevant", learned at a destructive rate: the candidate
    # unlearns relevance, which the seed gold (mostly relevant) shows as a regression
    for d in decision_items(engine, theses)[0]:
        with engine.begin() as c:
            c.execute(labels.update().where(labels.c.id == d.label_id)
                      .values(final={"relevant": False, "evidence_type": None, "direction": None,
                                     "strength": None, "trigger": None},
                              review_state="corrected"))
    lines = SEED.read_text(encoding="utf-8").splitlines()[:24]
    (tmp_path / "seed-part.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = CliRunner().invoke(main, [
        "model", "train", "--from-decisions", "--db", db_url, "--theses", str(TRAIN_THESES),
        "--gate-gold", str(tmp_path / "seed-part.jsonl"), "--gate-theses",
        str(ROOT / "theses.toml"), "--out", str(tmp_path / "bad"), "--lr", "3e-3",
        "--epochs", "3", "--max-steps", "6", "--data", str(TRAIN_ITEMS),
        "--data-theses", str(TRAIN_THESES), "-q"])
    assert out.exit_code == 1, out.output
    assert "refused" in out.output and "the gate found a regression" in out.output
    assert "the active version is unchanged" in out.output
    assert versions.active(engine) is None  # the shipped model still labels
    with engine.connect() as c:
        row = c.execute(select(model_versions)).mappings().one()
    assert (row["status"], row["active"]) == ("refused", False)
    assert not row["gate"]["passed"] and row["gate"]["sets"]["seed-part"]["problems"]
    listed = json.loads(CliRunner().invoke(main, ["model", "list", "--json", "--db",
                                               db_url]).output)
    assert [(v["version"], v["status"]) for v in listed["versions"]] == [(row["version"], "refused")]
    assert listed["active"] == versions.shipped_version()
    with pytest.raises(ConfigError, match="no encoder version"):
        versions.use(engine, "nope")
