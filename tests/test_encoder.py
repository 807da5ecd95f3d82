"""The evidence encoder: inputs, calibration, the training loop (a few real steps on a tiny
subset of eval/train), resuming, the model folder and its card, and the shipped model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from classifier.cli import main
from classifier.config import load_theses
from classifier.encoder import SHIPPED_DIR, calibrate, card
from classifier.encoder.build import BuildOptions, build, check_disjoint
from classifier.encoder.data import IGNORE, example_from_item, load_written, thesis_split
from classifier.encoder.inputs import select, split_sentences
from classifier.encoder.network import WEIGHTS_FILE, sha256_file
from classifier.encoder.train import TrainSettings, train
from classifier.errors import BackendUnavailable, ConfigError
from classifier.evaluation.gold import load_gold
from tests.conftest import ROOT

TRAIN_ITEMS = ROOT / "eval" / "train" / "items.jsonl"
TRAIN_THESES = ROOT / "eval" / "train" / "theses.toml"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    """The first 4 theses of eval/train with 12 items each, as their own files."""
    theses = load_theses(TRAIN_THESES)
    items = load_gold([TRAIN_ITEMS], theses)
    keep = [t.id for t in theses.thesis[:4]]
    lines = [json.loads(x) for x in TRAIN_ITEMS.read_text(encoding="utf-8").splitlines() if x]
    chosen = []
    for tid in keep:
        chosen += [x for x in lines if x["thesis"] == tid][:12]
    d = tmp_path_factory.mktemp("tiny")
    (d / "items.jsonl").write_text("\n".join(json.dumps(x) for x in chosen) + "\n", encoding="utf-8")
    text = TRAIN_THESES.read_text(encoding="utf-8")
    (d / "theses.toml").write_text(text, encoding="utf-8")  # unused theses are harmless
    assert len(items) >= 1200
    return d / "items.jsonl", d / "theses.toml"


def test_sentences_keep_their_spans_and_selection_fits_the_budget():
    thesis = load_theses(ROOT / "theses.toml").thesis[0]
    text = ("Open-weights models drew level on GPQA. " * 3 + "\n\nLlamas grazed. " * 30).strip()
    sents = split_sentences(text)
    assert all(text[s.start:s.end] == s.text for s in sents)
    p = select(thesis, "A title", text, budget=40, count=lambda s: len(s.split()))
    assert sum(len(s.text.split()) for s in p.sentences) + 3 <= 40
    assert all(p.text[a:b] == s.text for s, (a, b) in zip(p.sentences, p.spans, strict=True))
    assert p.sentences[0].text.startswith("Open-weights")  # the on-topic lede is kept


def test_temperature_fit_recovers_overconfidence():
    g = torch.Generator().manual_seed(0)
    true = torch.randn(4000, 3, generator=g) * 1.5
    targets = torch.multinomial(torch.softmax(true, -1), 1, generator=g).squeeze(1)
    t = calibrate.fit_temperature(true * 3.0, targets, "direction")  # 3x too confident
    assert 2.5 < t < 3.6


def test_thesis_split_is_disjoint_and_seeded():
    ids = [f"t{i}" for i in range(20)]
    a = thesis_split(ids, n_calibration=4, n_heldout=3, seed=0)
    assert sorted(a.values()).count("heldout") == 3 and list(a.values()).count("calibration") == 4
    assert a == thesis_split(reversed(ids), n_calibration=4, n_heldout=3, seed=0)
    assert a != thesis_split(ids, n_calibration=4, n_heldout=3, seed=1)
    with pytest.raises(ConfigError, match="cannot spare"):
        thesis_split(ids[:3], n_calibration=2, n_heldout=1, seed=0)


def test_training_loss_falls_resumes_identically_and_writes_a_card(tiny, tmp_path):
    items, theses = tiny
    written, _, _ = load_written([items], theses)
    examples = [example_from_item(it) for it in written]
    s = TrainSettings(epochs=4, seed=3, max_length=64, batch_size=8, lr=2e-4, head_lr=5e-3,
                      checkpoint_every=2, max_steps=16)
    model, _, log = train(examples, s, tmp_path / "a", written={"items"})
    first, last = sum(log["losses"][:4]) / 4, sum(log["losses"][-4:]) / 4
    assert last < first * 0.9, log["losses"]

    class Stop(Exception):
        pass

    def interrupt(step: int, _total: int, _loss: float) -> None:
        if step == 7:
            raise Stop

    with pytest.raises(Stop):
        train(examples, s, tmp_path / "b", written={"items"}, progress=interrupt)
    resumed, _, log_b = train(examples, s, tmp_path / "b", written={"items"})
    assert log_b["resumed_at"] == 6 and log_b["losses"] == log["losses"]
    a, b = model.trained_state(), resumed.trained_state()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_build_writes_folder_card_and_held_out_metrics(tiny, tmp_path):
    items, theses = tiny
    out = tmp_path / "m"
    c = build(BuildOptions(data=[str(items)], data_theses=str(theses), out=out,
                           settings=TrainSettings(epochs=1, max_length=64, batch_size=8,
                                                  max_steps=3),
                           n_calibration=1, n_heldout=1))
    assert (out / WEIGHTS_FILE).stat().st_size < 30 * 2**20
    assert c["weights"]["sha256"] == sha256_file(out / WEIGHTS_FILE)
    assert c["data"][1]["sha256"] and c["data"][1]["items"] == 48
    assert c["split"]["counts"] == {"train": 2, "calibration": 1, "heldout": 1}
    figs = c["metrics"]["heldout-theses"]["figures"]
    assert figs["relevant.accuracy"]["n"] == 12 and "direction.recall.undermines" in figs
    assert "Evidence encoder" in (out / "README.md").read_text()
    loaded = card.load(out)
    assert loaded.version == c["version"]
    (out / WEIGHTS_FILE).write_bytes((out / WEIGHTS_FILE).read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(BackendUnavailable, match="does not match its card"):
        card.load(out)


def test_evaluation_sets_must_not_overlap_training(tiny):
    items, theses = tiny
    written, _, _ = load_written([items], theses)
    examples = [example_from_item(it) for it in written]
    with pytest.raises(ConfigError, match="overlaps the training data"):
        check_disjoint(examples, "gold", written[:2])
    seed = load_gold([ROOT / "eval/gold/seed.jsonl"], load_theses(ROOT / "theses.toml"))
    check_disjoint(examples, "seed", seed)


def test_corpus_examples_judge_only_what_their_set_labels():
    from classifier.evaluation import adapters
    fnc = adapters.load_dataset("fnc1", sample=40, seed=0, split="train")
    ex = [example_from_item(it) for it in fnc]
    assert all(e.targets["evidence_type"] == IGNORE and e.targets["strength"] == IGNORE for e in ex)
    assert {e.targets["relevant"] for e in ex} == {0, 1}
    held = adapters.load_dataset("fnc1", split="heldout")
    bodies = {it.text for it in adapters.load_dataset("fnc1", split="train")}
    assert held and not any(it.text in bodies for it in held)


def test_malformed_training_file_names_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = TRAIN_ITEMS.read_text(encoding="utf-8").splitlines()[0]
    obj = json.loads(good)
    obj["label"]["direction"] = "sideways"
    bad.write_text(good + "\n" + json.dumps(obj) + "\n", encoding="utf-8")
    r = CliRunner().invoke(main, ["model", "train", "--data", str(bad), "--data-theses",
                                  str(TRAIN_THESES), "--out", str(tmp_path / "m"), "--no-corpora"])
    assert r.exit_code == 1
    assert "bad.jsonl" in r.output and ":2" in r.output and "direction" in r.output


def test_missing_model_folder_names_the_fix(tmp_path):
    from classifier.backends import get_backend
    with pytest.raises(BackendUnavailable, match="evidence model train"):
        get_backend(f"encoder:{tmp_path / 'nowhere'}")


def test_shipped_model_loads_offline_and_matches_its_card(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    c = card.read_card(SHIPPED_DIR)
    assert sha256_file(SHIPPED_DIR / c["weights"]["file"]) == c["weights"]["sha256"]
    assert (SHIPPED_DIR / c["weights"]["file"]).stat().st_size <= 30 * 2**20
    assert c["base"]["sha256"] == card.base_info()["sha256"]
    from classifier.backends import get_backend
    b = get_backend("encoder")
    assert b.name == "encoder" and b.model == c["version"]
    thesis = load_theses(ROOT / "theses.toml").get("oss-parity")
    text = ("An independent leaderboard run by three universities found the best open-weights "
            "model trailing the closed leader by nine points on GPQA and twelve on SWE-bench. "
            "The gap widened for the second quarter in a row.")
    j = b.judge(thesis, "Open models fall further behind", text)
    assert set(j["probs"]) == {"relevant", "direction", "evidence_type", "strength"}
    assert all(math.isclose(sum(p), 1.0, abs_tol=1e-3) for p in j["probs"].values())
    assert 0.0 <= j["confidence"] <= 1.0 and all(q in text for q in j["quotes"])


def test_encoder_labels_the_demo_set_end_to_end(engine):
    from sqlalchemy import select as sql_select

    from classifier.backends import get_backend
    from classifier.config import Settings
    from classifier.demo import run_demo
    from classifier.store.tables import labels, llm_calls, pairs
    backend = get_backend("encoder")
    report = run_demo(engine, Settings(), backend=backend)
    c = report.counts
    assert c.pairs_routed > 0 and c.labels_new == c.pairs_routed and c.labels_failed == 0
    with engine.connect() as conn:
        labs = conn.execute(sql_select(labels)).mappings().all()
        calls = conn.execute(sql_select(llm_calls)).mappings().all()
        states = set(conn.execute(sql_select(pairs.c.state)).scalars().all())
    assert "pending" not in states and len(calls) == len(labs)
    assert all(lab["backend"] == "encoder" and lab["review_state"] == "pending" for lab in labs)
    assert all(lab["model"] == backend.model for lab in labs)
    relevant = [lab for lab in labs if lab["relevant"]]
    assert relevant and all(lab["quotes"] for lab in relevant)


def test_counter_theses_flip_direction_and_stay_in_their_thesis_split(tmp_path):
    from classifier.encoder.data import counter_examples, load_counters
    theses = load_theses(TRAIN_THESES)
    items = [it for it in load_gold([TRAIN_ITEMS], theses) if it.thesis.id == theses.thesis[0].id]
    f = tmp_path / "counter.toml"
    f.write_text(f'[[counter]]\nthesis = "{theses.thesis[0].id}"\nstatement = "The opposite."\n')
    ex = counter_examples(items, load_counters(f))
    assert len(ex) == len(items)
    for it, e in zip(items, ex, strict=True):
        orig = example_from_item(it)
        assert e.thesis.statement == "The opposite." and e.group == orig.group == it.thesis.id
        flip = {0: 1, 1: 0, 2: 2, IGNORE: IGNORE}
        assert e.targets["direction"] == flip[orig.targets["direction"]]
        assert all(e.targets[h] == orig.targets[h] for h in ("relevant", "evidence_type", "strength"))
    f.write_text('[[counter]]\nthesis = "x"\n')
    with pytest.raises(ConfigError, match="statement"):
        load_counters(f)
    assert set(load_counters(ROOT / "eval/train/counter.toml")) == {t.id for t in theses.thesis}
