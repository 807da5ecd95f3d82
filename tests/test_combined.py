"""The combined labeler: the shipped encoder on every pair, a scripted LLM where the policy asks,
the combiner per field; what the stored label keeps; LLM failures; the combiner file's checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sqlalchemy import select

from classifier.backends import ScriptedBackend, get_backend, resolve_llm, resolve_spec
from classifier.backends.combined import CombinedBackend
from classifier.cli import main
from classifier.combine import policy
from classifier.combine.combiner import FILE, Combiner, Sample
from classifier.combine.provenance import differing, disagreement
from classifier.config import LabelSettings, ThesesFile
from classifier.errors import ConfigError, TransportError
from classifier.label import label_pending
from classifier.store.tables import labels, llm_calls
from tests.label_fixtures import GOOD, THESIS, add_pair

THESES = ThesesFile(thesis=[THESIS])
# the lab story as undermining with a trigger the other way: the LLM says supports + above-85
UP = {**GOOD.model_dump(mode="json"), "trigger": "above-85", "confidence": 0.9}


def _stored(engine):
    with engine.connect() as c:
        return c.execute(select(labels).order_by(labels.c.id)).mappings().all()


def test_default_labeler_is_combined_and_its_llm_part_is_an_llm(monkeypatch):
    monkeypatch.delenv("EVIDENCE_MODEL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert resolve_spec(None) == "combined"
    assert resolve_llm(None) == "local"
    monkeypatch.setenv("EVIDENCE_MODEL", "openai:gpt-4o-mini")
    assert (resolve_spec(None), resolve_llm(None)) == ("combined", "openai:gpt-4o-mini")
    monkeypatch.setenv("EVIDENCE_MODEL", "encoder")  # names the labeler, not an LLM
    assert (resolve_spec(None), resolve_llm(None)) == ("encoder", "local")
    with pytest.raises(ConfigError, match="must be an LLM"):
        resolve_llm("encoder")


@pytest.fixture(scope="module")
def no_combiner(tmp_path_factory):
    """A copy of the shipped encoder folder without its combiner: the encoder decides."""
    import shutil

    from classifier.encoder import SHIPPED_DIR
    folder = tmp_path_factory.mktemp("enc") / "enc"
    shutil.copytree(SHIPPED_DIR, folder, ignore=shutil.ignore_patterns("combiner*", "eval"))
    return folder


def test_combined_label_keeps_both_opinions_and_who_decided(engine, no_combiner):
    add_pair(engine)
    llm = ScriptedBackend([UP])
    backend = get_backend("combined", LabelSettings(), llm=llm, encoder=str(no_combiner))
    counts = label_pending(engine, THESES, backend)
    assert (counts.labeled, counts.llm_skipped) == (1, 0)
    row = _stored(engine)[0]
    p = row["proposals"]
    assert row["backend"] == "combined" and row["encoder_version"] == backend.encoder_version
    assert p["llm_status"] == "answered" and p["llm"]["direction"] == "supports"
    assert set(p["encoder"]["probs"]) == {"relevant", "direction", "evidence_type", "strength"}
    # no combiner fitted for this encoder: the encoder decides every class field
    assert p["combiner"] is None
    assert {p["decided"][f] for f in ("relevant", "confidence")} == {"encoder"}
    enc = p["encoder"]
    assert (row["relevant"], row["direction"]) == (enc["relevant"], enc["direction"])
    assert p["disagree"] == differing(enc, p["llm"])
    assert row["disagreement"] == len(p["disagree"])
    if row["relevant"] == p["llm"]["relevant"]:  # rationale and quotes are the LLM's
        assert p["decided"]["rationale"] == "llm" and GOOD.rationale in row["rationale"]
        assert row["quotes"] == GOOD.quotes
    # the trigger survives only when the combined direction agrees with it (above-85 is "up")
    assert (row["trigger"] == "above-85") == (row["relevant"] and row["direction"] == "supports")
    with engine.connect() as c:
        backends = [r.backend for r in c.execute(select(llm_calls.c.backend)
                                                 .order_by(llm_calls.c.id))]
    assert backends == ["encoder", "scripted"]


def test_the_shipped_combiner_decides_the_class_fields(engine):
    add_pair(engine)
    backend = get_backend("combined", LabelSettings(), llm=ScriptedBackend([UP]))
    assert backend.combiner.fitted and backend.combiner.version in backend.model
    label_pending(engine, THESES, backend)
    p = _stored(engine)[0]["proposals"]
    assert p["combiner"] == backend.combiner.version
    assert all(p["decided"][f] == "combiner" for f in ("relevant", "confidence"))
    # the LLM says direct/supports/strong with 0.9: the stacked label leans on it
    assert _stored(engine)[0]["relevant"] is True


def test_a_failing_llm_leaves_the_encoders_label_with_the_reason(engine):
    add_pair(engine, n=1)
    add_pair(engine, n=2)
    # pair 1: transport failure; pair 2: an answer that stays invalid after the re-asks
    llm = ScriptedBackend([TransportError("HTTP 503 from the server", error_type="http_503"),
                           "not json", "still not json", "nor this"])
    counts = label_pending(engine, THESES, get_backend("combined", LabelSettings(), llm=llm))
    assert (counts.labeled, counts.failed, counts.deferred) == (2, 0, 0)
    first, second = (r["proposals"] for r in _stored(engine))
    assert first["llm_status"] == "failed" and "http_503" in first["llm_reason"]
    assert second["llm_status"] == "failed" and second["llm"] is None
    assert all(r["disagreement"] is None for r in _stored(engine))
    assert all(r["rationale"].startswith("Evidence encoder") for r in _stored(engine))


LLAMAS = ("The county fair's llama show drew a record crowd on Saturday. Judges scored 41 "
          "animals on fleece, gait and temperament, and a six-year-old female named Biscuit took "
          "the championship ribbon. Organisers said next year's show will move to the larger barn "
          "by the east gate.")


def test_policy_uncertain_and_none_skip_the_llm_and_the_saving_is_counted(engine, db_url):
    add_pair(engine)  # the lab story: the encoder is unsure of it (P(relevant) 0.77)
    add_pair(engine, n=1, text=LLAMAS, title="Llama show")  # sure it is not relevant (0.83)
    llm = ScriptedBackend([UP, UP])
    settings = LabelSettings(llm="uncertain", llm_sure=0.8)
    counts = label_pending(engine, THESES, get_backend("combined", settings, llm=llm),
                           settings=settings)
    assert (counts.labeled, counts.llm_skipped, len(llm)) == (2, 1, 1)
    lab, llamas = (r["proposals"] for r in _stored(engine))
    assert lab["llm_status"] == "answered"
    assert llamas["llm_status"] == "skipped" and "sure it is not relevant" in llamas["llm_reason"]
    out = CliRunner().invoke(main, ["calls", "--db", db_url])
    assert out.exit_code == 0, out.output
    assert "LLM answered 1, failed 0, skipped 1 ([label] llm)" in out.output
    backend = get_backend("combined", LabelSettings(llm="none"), llm=ScriptedBackend())
    assert backend.llm is None and backend.model.endswith("+no-llm+none")


def test_policy_rules():
    sure_no = {"relevant": [0.97, 0.03], "direction": [0.4, 0.3, 0.3]}
    sure_yes = {"relevant": [0.02, 0.98], "direction": [0.95, 0.03, 0.02]}
    torn = {"relevant": [0.02, 0.98], "direction": [0.5, 0.4, 0.1]}
    assert policy.ask_llm("all", sure_no, 0.9) == (True, None)
    assert policy.ask_llm("uncertain", sure_no, 0.9)[0] is False
    assert policy.ask_llm("uncertain", sure_yes, 0.9)[0] is False
    assert policy.ask_llm("uncertain", torn, 0.9) == (True, None)
    assert policy.ask_llm("relevant", sure_no, 0.9)[0] is False
    assert policy.ask_llm("relevant", torn, 0.9) == (True, None)
    assert policy.ask_llm("none", torn, 0.9)[0] is False


def _samples(n: int, seed: int = 0) -> list[Sample]:
    """Synthetic pairs where the LLM's direction is right 90% of the time and the encoder's
    direction probabilities are noise: a fitted combiner must learn to follow the LLM there."""
    rng = np.random.default_rng(seed)
    out = []
    dirs = ("supports", "undermines", "neutral")
    for i in range(n):
        gold_dir = dirs[i % 3]
        llm_dir = gold_dir if rng.random() < 0.9 else dirs[(i + 1) % 3]
        probs = {"relevant": [0.2, 0.8], "direction": list(rng.dirichlet([1, 1, 1])),
                 "evidence_type": [0.6, 0.4], "strength": [0.3, 0.4, 0.3]}
        llm = {"relevant": True, "evidence_type": "direct", "direction": llm_dir,
               "strength": "moderate", "confidence": 0.9}
        out.append(Sample(probs, llm, {"relevant": True, "direction": gold_dir,
                                       "evidence_type": "direct", "strength": "moderate"},
                          group=f"t{i % 4}"))
    return out


def test_a_fitted_combiner_follows_the_side_that_is_right_and_checks_its_file(tmp_path):
    comb = Combiner.fit(_samples(120), "enc-1")
    test = _samples(60, seed=1)
    right = [comb.decide(s.enc_probs, s.llm, 0.5)[0]["direction"] == s.gold["direction"]
             for s in test]
    llm_right = [s.llm["direction"] == s.gold["direction"] for s in test]
    assert np.mean(right) >= np.mean(llm_right) - 0.02 and np.mean(right) > 0.8
    _, conf, decided = comb.decide(test[0].enc_probs, test[0].llm, 0.5)
    assert decided["direction"] == "combiner" and 0 < conf < 1
    comb.save(tmp_path)
    again = Combiner.load(tmp_path, "enc-1")
    assert again.version == comb.version and again.weights == comb.weights
    with pytest.raises(ConfigError, match="fitted for encoder 'enc-1'"):
        Combiner.load(tmp_path, "enc-2")
    body = json.loads((tmp_path / FILE).read_text())
    body["weights"]["direction"][0][0] += 1.0
    (tmp_path / FILE).write_text(json.dumps(body))
    with pytest.raises(ConfigError, match="was edited"):
        Combiner.load(tmp_path, "enc-1")
    assert not Combiner.load(tmp_path / "none", "enc-1").fitted  # no file: the encoder decides


def test_a_combiner_for_another_encoder_stops_the_combined_labeler(tmp_path):
    import shutil

    from classifier.encoder import SHIPPED_DIR
    folder = tmp_path / "enc"
    shutil.copytree(SHIPPED_DIR, folder)
    Combiner.fit(_samples(60), "not-this-encoder").save(folder)
    with pytest.raises(ConfigError, match="refit it"):
        CombinedBackend(None, encoder=folder)


def test_disagreement_counts_fields_only_when_both_sides_answered():
    enc = {"relevant": True, "evidence_type": "direct", "direction": "undermines",
           "strength": "weak"}
    llm = {**enc, "direction": "supports", "strength": "strong"}
    assert differing(enc, llm) == ["direction", "strength"]
    assert differing(enc, {**llm, "relevant": False}) == ["relevant"]
    assert disagreement({"encoder": enc, "llm": llm}) == 2
    assert disagreement({"encoder": enc, "llm": None}) is None
