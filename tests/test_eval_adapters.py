"""External-set adapters on a few real rows of ../shared/corpora, and stratified sampling."""

from __future__ import annotations

import collections
import json

import pytest

from classifier.errors import ConfigError
from classifier.evaluation import adapters
from classifier.evaluation.adapters import climate_fever, fnc, perspectrum


def _write_fnc(tmp_path, bodies, stances):
    (tmp_path / "b.csv").write_text("Body ID,articleBody\n" + "".join(
        f'{i},"{t}"\n' for i, t in bodies.items()), encoding="utf-8")
    (tmp_path / "s.csv").write_text("Headline,Body ID,Stance\n" + "".join(
        f'"{h}",{i},{s}\n' for h, i, s in stances), encoding="utf-8")
    return tmp_path / "b.csv", tmp_path / "s.csv"


def test_fnc_mapping_on_written_rows(tmp_path):
    b, s = _write_fnc(tmp_path, {7: "Body seven.", 8: "Body eight."},
                      [("Claim A", 7, "agree"), ("Claim B", 7, "disagree"),
                       ("Claim C", 8, "discuss"), ("Claim D", 8, "unrelated")])
    items = fnc.load_pairs(b, s, prefix="fnc1")
    got = [(i.thesis.statement, i.text, i.gold.relevant, i.gold.direction, i.stratum) for i in items]
    assert got == [("Claim A", "Body seven.", True, "supports", "agree"),
                   ("Claim B", "Body seven.", True, "undermines", "disagree"),
                   ("Claim C", "Body eight.", True, "neutral", "discuss"),
                   ("Claim D", "Body eight.", False, None, "unrelated")]
    assert items[0].gold.scored == frozenset({"relevant", "direction"})
    assert items[0].thesis.id == items[0].thesis.id and items[0].thesis.id.startswith("fnc1-")
    b2, s2 = _write_fnc(tmp_path, {7: "x"}, [("C", 7, "maybe")])
    with pytest.raises(ConfigError, match="unknown stance 'maybe'"):
        fnc.load_pairs(b2, s2, prefix="fnc1")


def test_fnc1_real_rows(corpora):
    items = fnc.load_fnc1(corpora)
    assert len(items) == 49972
    counts = collections.Counter(i.stratum for i in items)
    assert counts == {"unrelated": 36545, "discuss": 8909, "agree": 3678, "disagree": 840}
    first = items[0]  # row 1: a headline unrelated to body 0 (the Managua meteorite)
    assert first.gold.relevant is False and "meteorite" in first.text
    agree = next(i for i in items if i.stratum == "agree")
    assert agree.gold.relevant is True and agree.gold.direction == "supports"


def test_arc_real_rows(corpora):
    items = fnc.load_arc(corpora)
    assert len(items) == 14233
    row = items[0]  # "We don't need to hear from candidate's spouse", 90628, agree
    assert row.thesis.statement == "We don't need to hear from candidate's spouse"
    assert (row.gold.relevant, row.gold.direction) == (True, "supports")
    assert collections.Counter(i.stratum for i in items)["disagree"] == 1402


def test_climate_fever_real_rows(corpora):
    items = climate_fever.load(corpora)
    assert collections.Counter(i.stratum for i in items) == {"SUPPORTS": 928, "REFUTES": 419}
    with open(corpora / "climate-fever" / "climate-fever.dev.jsonl", encoding="utf-8") as f:
        claim0 = json.loads(f.readline())
    mine = [i for i in items if i.id.startswith(f"cfever-{claim0['claim_id']}-")]
    want = [e for e in claim0["evidences"] if e["evidence_label"] in ("SUPPORTS", "REFUTES")]
    assert [i.text for i in mine] == [e["evidence"] for e in want]
    assert all(i.gold.relevant for i in mine)
    assert mine[0].thesis.statement == claim0["claim"]


def test_perspectrum_real_rows(corpora):
    items = perspectrum.load(corpora)
    strata = collections.Counter(i.gold.direction for i in items)
    assert set(strata) == {"supports", "undermines"}
    with open(corpora / "perspectrum" / "perspective_pool_v1.0.json", encoding="utf-8") as f:
        pool = {p["pId"]: p["text"] for p in json.load(f)}
    first = items[0]  # train claim 0's first cluster → its first perspective id
    cid, pid = first.id.split("-")[1:]
    assert first.text == pool[int(pid)].strip()
    assert first.gold.relevant is True


def test_stratified_sample_is_proportional_seeded_and_covers_strata(corpora):
    a = adapters.load_dataset("fnc1", sample=300, seed=0, corpora=corpora)
    b = adapters.load_dataset("fnc1", sample=300, seed=0, corpora=corpora)
    c = adapters.load_dataset("fnc1", sample=300, seed=1, corpora=corpora)
    assert [i.id for i in a] == [i.id for i in b] != [i.id for i in c]
    assert len({i.id for i in a}) == 300
    counts = collections.Counter(i.stratum for i in a)
    # 300 × (0.7313, 0.1783, 0.0736, 0.0168) → 219.4, 53.5, 22.1, 5.0 (largest remainder)
    assert counts == {"unrelated": 219, "discuss": 54, "agree": 22, "disagree": 5}
    small = adapters.load_dataset("fnc1", sample=4, seed=0, corpora=corpora)
    assert set(i.stratum for i in small) == {"unrelated", "discuss", "agree", "disagree"}
    with pytest.raises(ConfigError, match="unknown dataset"):
        adapters.load_dataset("nope", corpora=corpora)
