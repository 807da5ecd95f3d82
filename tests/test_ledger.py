"""Ledger math on hand-computed cases, first pure, then over stored labels and decisions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from classifier import ledger
from classifier.config import LedgerConfig, ThesesFile, ThesisConfig, TriggerConfig
from classifier.ledger import Evidence, compute_ledger, ledger_table
from classifier.records import Direction, EvidenceType, Strength

T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
THESIS = ThesisConfig(
    id="oss-parity", title="Open-source frontier parity",
    statement="Open-weights models match closed frontier models on public benchmarks.",
    probability=0.75,
    trigger=[TriggerConfig(id="above-85", direction="up", to=0.85, condition="third-party eval"),
             TriggerConfig(id="below-60", direction="down", to=0.60, condition="falls behind")])
TABLE = ledger_table(THESIS)


def ev(label_id: int, etype: str = "direct", direction: str = "supports", strength: str = "strong",
       *, story: int | None = None, minutes: int = 0) -> Evidence:
    return Evidence(label_id=label_id, article_id=label_id, story_id=story,
                    title=f"article {label_id}",
                    approved_at=T0 + timedelta(minutes=minutes or label_id),
                    evidence_type=EvidenceType(etype), direction=Direction(direction),
                    strength=Strength(strength))


def test_one_direct_strong_item_from_75_percent():
    # odds 3 × LR 3 = 9 → 9/10
    r = compute_ledger(THESIS, [ev(1)], prior=0.75, table=TABLE)
    assert r.suggested == pytest.approx(0.9)
    (line,) = r.lines
    assert line.counted and line.lr == 3.0 and line.contribution == pytest.approx(math.log(3))
    above, below = r.triggers
    assert above.reached and above.log_odds == pytest.approx(math.log(17 / 3) - math.log(9))
    # from 0.9 down to 0.6: ln 9 − ln 1.5 = ln 6 log-odds, ln 6 / ln 3 ≈ 1.63 direct-strong items
    assert not below.reached
    assert below.log_odds == pytest.approx(math.log(6))
    assert below.direct_strong_items == pytest.approx(math.log(6) / math.log(3))


def test_supporting_and_undermining_items_cancel():
    r = compute_ledger(THESIS, [ev(1), ev(2, direction="undermines")], prior=0.75, table=TABLE)
    assert r.suggested == pytest.approx(0.75)
    assert [ln.contribution for ln in r.lines] == pytest.approx([math.log(3), -math.log(3)])


def test_three_copies_of_one_story_count_once():
    copies = [ev(1, story=7), ev(2, strength="moderate", story=7), ev(3, story=7)]
    r = compute_ledger(THESIS, copies, prior=0.75, table=TABLE)
    assert r.suggested == pytest.approx(0.9)  # not 27:1
    counted = [ln for ln in r.lines if ln.counted]
    assert [ln.evidence.label_id for ln in counted] == [1]  # strongest, then earliest
    assert all("same story as label 1" in ln.note for ln in r.lines if not ln.counted)


def test_strongest_item_of_a_story_counts_even_if_later():
    r = compute_ledger(THESIS, [ev(1, strength="weak", story=4), ev(2, story=4)], prior=0.75,
                       table=TABLE)
    assert [ln.evidence.label_id for ln in r.lines if ln.counted] == [2]
    assert r.suggested == pytest.approx(0.9)


def test_circumstantial_only_evidence_hits_the_cap():
    # five circumstantial-strong items: raw 5 ln 1.5 ≈ 2.03 log-odds, capped at ln 2
    items = [ev(i, "circumstantial") for i in range(1, 6)]
    r = compute_ledger(THESIS, items, prior=0.5, table=TABLE)
    assert r.log_odds_change == pytest.approx(math.log(2))
    assert r.suggested == pytest.approx(2 / 3)
    assert r.capped == {"supports": pytest.approx(5 * math.log(1.5))}
    assert all("circumstantial cap" in ln.note for ln in r.lines)


def test_a_direct_item_in_the_same_direction_lifts_the_cap():
    items = [ev(i, "circumstantial") for i in range(1, 6)] + [ev(6)]
    r = compute_ledger(THESIS, items, prior=0.5, table=TABLE)
    assert r.log_odds_change == pytest.approx(5 * math.log(1.5) + math.log(3))
    assert r.capped == {}


def test_cap_is_per_direction():
    # a direct undermining item does not lift the cap on supporting circumstantial evidence
    items = [ev(i, "circumstantial") for i in range(1, 6)] + [ev(6, direction="undermines")]
    r = compute_ledger(THESIS, items, prior=0.5, table=TABLE)
    assert r.log_odds_change == pytest.approx(math.log(2) - math.log(3))


def test_neutral_items_are_listed_and_move_nothing():
    r = compute_ledger(THESIS, [ev(1, direction="neutral")], prior=0.75, table=TABLE)
    assert r.suggested == pytest.approx(0.75)
    assert r.lines[0].lr == 1.0 and r.lines[0].counted


def test_evidence_before_the_applied_prior_is_absorbed():
    items = [ev(1, story=3, minutes=1), ev(2, story=3, minutes=30), ev(4, minutes=40)]
    r = compute_ledger(THESIS, items, prior=0.8, table=TABLE, since=T0 + timedelta(minutes=10),
                       prior_source="applied")
    assert [ln.evidence.label_id for ln in r.lines] == [2, 4]  # 1 was before the anchor
    assert not r.lines[0].counted and "already counted" in r.lines[0].note  # its story was
    assert r.suggested == pytest.approx(12 / 13)  # odds 4 × 3


def test_file_and_thesis_ledger_sections_override_defaults():
    own = LedgerConfig(likelihood_ratios={"direct.strong": 4})
    thesis = THESIS.model_copy(update={"ledger": own})
    file = ThesesFile(thesis=[thesis], ledger=LedgerConfig(
        likelihood_ratios={"direct.strong": 5, "direct.weak": 1.5}, circumstantial_cap=1.0))
    table = ledger_table(thesis, file)
    assert table.likelihood_ratios["direct.strong"] == 4  # thesis wins
    assert table.likelihood_ratios["direct.weak"] == 1.5  # file
    assert table.likelihood_ratios["circumstantial.weak"] == 1.1  # code default
    assert table.circumstantial_cap == 1.0
    r = compute_ledger(thesis, [ev(1)], prior=0.75, table=table)
    assert r.suggested == pytest.approx(12 / 13)


def test_running_values_restart_at_each_applied_probability():
    items = [ev(1, minutes=1), ev(2, minutes=20)]
    history = [ledger.HistoryPoint(id=1, thesis_id=THESIS.id, from_probability=0.75,
                                   to_probability=0.8, user_name="ed",
                                   created_at=T0 + timedelta(minutes=10))]
    points = ledger.running_values(THESIS, items, history, table=TABLE)
    assert [round(p.probability, 4) for p in points] == [0.9, 0.8, round(12 / 13, 4)]


# ---------------------------------------------------------------------------------------------
# Over the store: labels decided through the review queue
# ---------------------------------------------------------------------------------------------

from classifier import queue, users  # noqa: E402
from classifier.errors import LedgerError  # noqa: E402
from classifier.store import write  # noqa: E402
from tests.ledger_seed import add_label, story_of  # noqa: E402


def _decide(engine, label_id, action, fields=None):
    return queue.decide(engine, label_id, user="ed", action=action, version=1, fields=fields)


def test_stored_rejected_item_contributes_nothing(engine):
    with write(engine) as conn:
        a = add_label(conn)
        b = add_label(conn, title="A rumour")
    _decide(engine, a, "approve")
    _decide(engine, b, "reject")
    with engine.connect() as conn:
        r = ledger.ledger_for(conn, THESIS)
    assert [ln.evidence.label_id for ln in r.lines] == [a]
    assert r.suggested == pytest.approx(0.9)
    assert r.lines[0].evidence.approved_by == "ed"


def test_stored_pending_and_irrelevant_items_contribute_nothing(engine):
    with write(engine) as conn:
        add_label(conn)  # still pending
        c = add_label(conn)
    _decide(engine, c, "correct", {"relevant": False})
    with engine.connect() as conn:
        r = ledger.ledger_for(conn, THESIS)
    assert r.lines == () and r.suggested == pytest.approx(0.75)


def test_stored_correction_uses_the_editors_fields(engine):
    with write(engine) as conn:
        a = add_label(conn, evidence_type="circumstantial", strength="weak")
    _decide(engine, a, "correct", {"relevant": True, "evidence_type": "direct",
                                   "direction": "undermines", "strength": "strong"})
    with engine.connect() as conn:
        r = ledger.ledger_for(conn, THESIS)
    # odds 3 / 3 = 1
    assert r.suggested == pytest.approx(0.5)
    assert r.lines[0].evidence.review_state == "corrected"


def test_stored_three_copies_of_one_story_count_once(engine):
    with write(engine) as conn:
        first = add_label(conn)
        story = story_of(conn, first)
        copies = [first] + [add_label(conn, story_id=story) for _ in range(2)]
    for label_id in copies:
        _decide(engine, label_id, "approve")
    with engine.connect() as conn:
        r = ledger.ledger_for(conn, THESIS)
    assert len(r.lines) == 3 and sum(ln.counted for ln in r.lines) == 1
    assert r.suggested == pytest.approx(0.9)


def test_apply_records_history_and_moves_the_prior(engine):
    users.add_user(engine, "ed", "a long enough password", role="editor")
    with write(engine) as conn:
        a = add_label(conn)
    _decide(engine, a, "approve")
    with write(engine) as conn:
        h = ledger.apply_probability(conn, THESIS, to=0.88, user_name="ed", note="one strong run")
    assert (h.from_probability, h.to_probability) == (0.75, 0.88)
    assert h.suggested_probability == pytest.approx(0.9)
    with engine.connect() as conn:
        r = ledger.ledger_for(conn, THESIS)
        assert ledger.current_probability(conn, THESIS) == 0.88
        (hist,) = ledger.load_history(conn, THESIS.id)
    # the item approved before the apply is absorbed: the suggestion starts again from 0.88
    assert r.prior == 0.88 and r.prior_source == "applied" and r.lines == ()
    assert r.suggested == pytest.approx(0.88)
    assert hist.user_name == "ed" and hist.note == "one strong run"
    # a second copy of the absorbed story approved later does not count again
    with write(engine) as conn:
        b = add_label(conn, story_id=story_of(conn, a))
    _decide(engine, b, "approve")
    with engine.connect() as conn:
        r = ledger.ledger_for(conn, THESIS)
    assert len(r.lines) == 1 and not r.lines[0].counted
    assert r.suggested == pytest.approx(0.88)


def test_apply_refuses_bad_values_and_non_editors(engine):
    users.add_user(engine, "ed", "a long enough password", role="editor")
    users.add_user(engine, "gone", "a long enough password", role="editor")
    users.set_disabled(engine, "gone", True)
    cases = [(1.0, "ed", "certain", "between 0 and 1"), (0.8, "ed", "  ", "note"),
             (0.8, "nobody", "why not", "unknown user"), (0.8, "gone", "why not", "may not")]
    for to, user, note, message in cases:
        with write(engine) as conn, pytest.raises(LedgerError, match=message):
            ledger.apply_probability(conn, THESIS, to=to, user_name=user, note=note)
    with engine.connect() as conn:
        assert ledger.load_history(conn, THESIS.id) == []


def test_cli_ledger_show_apply_history(engine, db_url, tmp_path):
    import json

    from click.testing import CliRunner

    from classifier.cli import main
    users.add_user(engine, "ana", "a long enough password", role="editor")
    with write(engine) as conn:
        a = add_label(conn, title="Independent eval")
        b = add_label(conn, title="Copy", story_id=story_of(conn, a))
    _decide(engine, a, "approve")
    _decide(engine, b, "approve")
    theses = str(tmp_path / "theses.toml")
    (tmp_path / "theses.toml").write_text(THESES_TOML, encoding="utf-8")
    run = CliRunner().invoke
    out = run(main, ["ledger", "oss-parity", "--json", "--db", db_url, "--theses", theses])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["suggested"] == pytest.approx(0.9) and data["current"] == 0.75
    assert [i["counted"] for i in data["items"]] == [True, False]
    assert {t["trigger_id"]: t["reached"] for t in data["triggers"]} == {"above-85": True,
                                                                          "below-60": False}
    out = run(main, ["ledger", "apply", "oss-parity", "--suggested", "--user", "ana",
                     "--note", "eval", "--db", db_url, "--theses", theses])
    assert out.exit_code == 0, out.output
    assert "75.0% → 90.0%" in out.output
    out = run(main, ["ledger", "history", "oss-parity", "--json", "--db", db_url,
                     "--theses", theses])
    (h,) = json.loads(out.output)
    assert (h["from_probability"], h["to_probability"], h["user_name"]) == (0.75, 0.9, "ana")
    out = run(main, ["ledger", "apply", "oss-parity", "--to", "0.5", "--user", "mallory",
                     "--note", "x", "--db", db_url, "--theses", theses])
    assert out.exit_code == 1 and "unknown user" in out.output


THESES_TOML = """
[[thesis]]
id = "oss-parity"
title = "Open-source frontier parity"
statement = "Open-weights models match closed frontier models on public benchmarks."
probability = 0.75

[[thesis.trigger]]
id = "above-85"
direction = "up"
to = 0.85
condition = "third-party eval"

[[thesis.trigger]]
id = "below-60"
direction = "down"
to = 0.60
condition = "falls behind"
"""


@pytest.mark.parametrize("seed", range(20))
def test_running_values_agree_with_full_recomputation(seed):
    # the timeline's incremental ledger and compute_ledger follow the same rules, on random data
    import random
    rnd = random.Random(seed)
    n = rnd.randint(1, 40)
    items = [ev(i, rnd.choice(["direct", "circumstantial"]),
                rnd.choice(["supports", "undermines", "neutral"]),
                rnd.choice(["weak", "moderate", "strong"]), story=rnd.randint(1, max(1, n // 3)),
                minutes=i) for i in range(1, n + 1)]
    cut = rnd.randint(0, n + 1)
    history = [] if cut == 0 else [ledger.HistoryPoint(
        id=1, thesis_id=THESIS.id, from_probability=0.75, to_probability=0.6, user_name="ed",
        created_at=T0 + timedelta(minutes=cut, seconds=30))]
    points = [p for p in ledger.running_values(THESIS, items, history, table=TABLE)
              if p.label_id is not None]
    since = history[0].created_at if history else None
    prior = 0.6 if history else 0.75
    for k, p in enumerate(points):
        upto = [e for e in items if e.approved_at <= p.at]
        if since is not None and p.at <= since:  # a point of the first segment
            full = compute_ledger(THESIS, upto, prior=0.75, table=TABLE)
        else:
            full = compute_ledger(THESIS, upto, prior=prior, table=TABLE, since=since)
        assert p.probability == pytest.approx(full.suggested, abs=1e-12), (seed, k)


def test_ledger_sections_load_from_theses_toml(tmp_path):
    from classifier.config import load_theses
    from classifier.errors import ConfigError
    path = tmp_path / "theses.toml"
    path.write_text(THESES_TOML.replace('[[thesis]]', '''[ledger]
likelihood_ratios = { "direct.strong" = 5.0 }
circumstantial_cap = 0.25

[[thesis]]''', 1) + '''
[thesis.ledger]
likelihood_ratios = { "direct.weak" = 1.2 }
''', encoding="utf-8")
    file = load_theses(path)
    table = ledger_table(file.get("oss-parity"), file)
    assert table.likelihood_ratios["direct.strong"] == 5.0
    assert table.likelihood_ratios["direct.weak"] == 1.2
    assert table.circumstantial_cap == 0.25
    path.write_text('[ledger]\nlikelihood_ratios = { "direct.huge" = 9.0 }\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="direct.huge"):
        load_theses(path)
