"""The learning curve: what editors' decisions teach the encoder on theses it never trained on.

The shipped encoder's held-out theses (8 theses of eval/train, 27 written items each, never
trained on and never calibrated on) are split per thesis, with --seed: a fixed test part
(--test-per-thesis items) and the rest, replayed as editors' decisions. For each point
(0, 5, 10, 20 decisions per thesis by default, all eight theses together) the shipped encoder is
fine-tuned afresh, as `evidence model train --from-decisions` does (the same function: those
decisions plus as many replayed written items of its training theses, --epochs, lr 5e-5, its
calibration kept), and scored on the test part. The same run prints, on the same test items,
the LLM alone (the predictions of an `evidence eval run` folder of the LLM over those items,
--llm-run) and the combined labeler (that point's encoder and the LLM's answers, with a combiner
refitted for that encoder on the LLM's run over the calibration theses, which no point trains
on, as `--from-decisions` refits it). 27 items per thesis leave room for at most 20 decisions
beside a test part of 7; more decisions per thesis need more data.

    # once: the LLM over the test items (56 by default), then the curve
    .venv/bin/python bench/learning.py --write-test-gold eval/runs/learning-test.jsonl
    .venv/bin/evidence eval run --theses eval/train/theses.toml --gold eval/runs/learning-test.jsonl \
        --model local --out eval/runs/learning-test-local
    .venv/bin/python bench/learning.py --llm-run eval/runs/learning-test-local

Prints one row per point and labeler: relevance accuracy, direction macro-F1, undermines recall,
ECE (95% bootstrap intervals over the test items), and the paired change in direction macro-F1
from 0 decisions with its interval.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.backends.encoder import EncoderBackend  # noqa: E402
from classifier.combine.combiner import Combiner  # noqa: E402
from classifier.combine.fit import llm_opinion, samples_from_run  # noqa: E402
from classifier.encoder import SHIPPED_DIR, card  # noqa: E402
from classifier.encoder.data import example_from_item, load_written  # noqa: E402
from classifier.encoder.learn import fine_tune  # noqa: E402
from classifier.evaluation import compare, metrics  # noqa: E402
from classifier.evaluation.results import ItemResult  # noqa: E402
from classifier.evaluation.runner import load_results, load_run  # noqa: E402

FIGS = ("relevant.accuracy", "direction.macro_f1", "direction.recall.undermines", "ece")


def _fmt(f: dict | None) -> str:
    if not f or f.get("value") is None:
        return "-"
    ci = f.get("ci") or [None, None]
    band = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None else ""
    return f"{f['value']:.3f}{band}"


def _result(item, pred: dict | None) -> ItemResult:
    return ItemResult(id=item.id, thesis=item.thesis.id, origin=item.origin, gold=item.gold,
                      pred=pred)


def _pred(choice: dict, confidence: float) -> dict:
    return {**{k: choice[k] for k in ("relevant", "evidence_type", "direction", "strength")},
            "trigger": None, "confidence": confidence, "rationale": "", "quotes": []}


def score(folder: Path, test: list, llm: dict, combiner: Combiner) -> tuple[list, list]:
    """Encoder folder + test items (+ LLM answers by id) → (encoder results, combined results)."""
    enc = EncoderBackend(folder)
    enc_rs, comb_rs = [], []
    for it in test:
        j = enc.judge(it.thesis, it.title, it.text)
        c = j["choice"]
        choice = {"relevant": c["relevant"] == "yes",
                  **{h: c[h] if c["relevant"] == "yes" else None
                     for h in ("evidence_type", "direction", "strength")}}
        enc_rs.append(_result(it, _pred(choice, j["confidence"])))
        cchoice, conf, _ = combiner.decide(j["probs"], llm.get(it.id), j["confidence"])
        comb_rs.append(_result(it, _pred(cchoice, conf)))
    return enc_rs, comb_rs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / "eval/train/items.jsonl"))
    ap.add_argument("--data-theses", default=str(ROOT / "eval/train/theses.toml"))
    ap.add_argument("--llm-run", help="eval run folder of the LLM over the test items")
    ap.add_argument("--combiner-run", default=str(ROOT / "eval/runs/train-calibration-local"),
                    help="the LLM's run over the calibration theses: each point's combiner is "
                         "refitted on it with that point's encoder")
    ap.add_argument("--write-test-gold", metavar="PATH",
                    help="write the test items as a gold file (for the LLM run) and stop")
    ap.add_argument("--points", type=int, nargs="+", default=[0, 5, 10, 20])
    ap.add_argument("--test-per-thesis", type=int, default=7)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    a = ap.parse_args()
    shipped = card.read_card(SHIPPED_DIR)
    split = shipped["split"]["theses"]
    written, _, _ = load_written([a.data], a.data_theses)
    heldout = sorted({it.thesis.id for it in written if split.get(it.thesis.id) == "heldout"})
    rng = random.Random(a.seed)
    test, pool = [], {}
    for tid in heldout:
        items = [it for it in written if it.thesis.id == tid]
        rng.shuffle(items)
        test += items[:a.test_per_thesis]
        pool[tid] = items[a.test_per_thesis:]
    if max(a.points) > min(len(v) for v in pool.values()):
        sys.exit(f"at most {min(len(v) for v in pool.values())} decisions per thesis are left "
                 f"beside a test part of {a.test_per_thesis}")
    if a.write_test_gold:
        wanted = {it.id for it in test}
        lines = [x for x in Path(a.data).read_text(encoding="utf-8").splitlines()
                 if x.strip() and json.loads(x)["id"] in wanted]
        Path(a.write_test_gold).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"{len(lines)} test items → {a.write_test_gold}")
        return
    if not a.llm_run:
        sys.exit("--llm-run DIR is required (see --write-test-gold)")
    replay_pool = [it for it in written if split.get(it.thesis.id) == "train"]
    model = load_run(a.llm_run)["config"]["model"]
    llm_results = {r.id: r for r in load_results(a.llm_run)}
    missing = [it.id for it in test if it.id not in llm_results]
    if missing:
        sys.exit(f"the LLM run {a.llm_run} has no result for {len(missing)} test items "
                 f"(e.g. {missing[:3]}): run it over the held-out theses first")
    llm = {it.id: llm_opinion(llm_results[it.id].pred, model) for it in test}
    llm_rs = [_result(it, llm_results[it.id].pred) for it in test]
    cal_ids = {r.id for r in load_results(a.combiner_run)}
    print(f"{len(heldout)} held-out theses, {len(test)} test items ({a.test_per_thesis} per "
          f"thesis, seed {a.seed}); LLM answers from {a.llm_run} ({model}); each point's "
          f"combiner refitted on {a.combiner_run} ({len(cal_ids)} calibration-thesis items)")
    rows, base = [], {}
    llm_m = metrics.compute(llm_rs)["figures"]
    rows.append({"labeler": "llm alone", "decisions": "-", **{k: llm_m.get(k) for k in FIGS}})
    with tempfile.TemporaryDirectory() as tmp:
        for k in a.points:
            started = time.perf_counter()
            folder = SHIPPED_DIR
            if k:
                decisions = [it for tid in heldout for it in pool[tid][:k]]
                replay = rng.sample(replay_pool, len(decisions))
                examples = [example_from_item(it.model_copy(update={"origin": "review"}))
                            for it in decisions] + [example_from_item(it) for it in replay]
                folder = Path(tmp) / f"k{k}"
                fine_tune(SHIPPED_DIR, examples, folder, epochs=a.epochs, lr=a.lr, seed=a.seed)
            fit_items = [it for it in written if it.id in cal_ids]
            samples = samples_from_run(fit_items, a.combiner_run, EncoderBackend(folder))
            combiner = Combiner.fit(samples, "point")
            enc_rs, comb_rs = score(folder, test, llm, combiner)
            secs = time.perf_counter() - started
            for name, rs in (("encoder", enc_rs), ("combined", comb_rs)):
                m = metrics.compute(rs)["figures"]
                row = {"labeler": name, "decisions": k, "seconds": round(secs, 1),
                       **{f: m.get(f) for f in FIGS}}
                if k == a.points[0]:
                    base[name] = rs
                else:
                    f1 = metrics.macro_f1("direction", list(metrics.CLASSES["direction"]))
                    lo, hi = compare.delta_ci(base[name], rs, f1)
                    row["direction_f1_change"] = {"ci": [lo, hi]}
                rows.append(row)
    print(f"{'labeler':<10}{'decisions':>10}  " + "  ".join(f"{f:<24}" for f in FIGS)
          + "  Δ direction F1 vs first point")
    for r in rows:
        change = r.get("direction_f1_change")
        delta = "" if not change or change["ci"][0] is None else \
            f"[{change['ci'][0]:+.2f}, {change['ci'][1]:+.2f}]"
        print(f"{r['labeler']:<10}{r['decisions']!s:>10}  "
              + "  ".join(f"{_fmt(r.get(f)):<24}" for f in FIGS) + f"  {delta}")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1, default=str) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
