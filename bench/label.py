"""Labeler overhead against a bare llama.cpp call with the same prompt, in the same run.

For each gold article: one bare `create_chat_completion` (same rendered messages, same schema
grammar, temperature 0, same max_tokens) and one `label_article` through our stack (render,
grammar, validation, grounding, re-asks if any), alternating which goes first so drift and the
prefix cache favour neither. Both share the model instance, so the fixed system prompt stays
cached for both. Prints per-article times, the ratio ours / bare (goal <= 1.1), prompt tokens per
article (goal <= 1,500), and pairs per minute.

With --encoder SPEC (default: the shipped encoder; "none" skips it), the same run then labels
every gold item through `label_article` with the evidence encoder (quotes included) and prints
its per-pair p50/p95 (goal p95 <= 100 ms on 2 cores) beside the LLM's per-pair times above.

With --combined N, the same run then labels N gold items (every k-th) with the combined labeler
twice, sharing the one LLM instance: [label] llm = "all" and llm = "uncertain" (alternating which
goes first), and prints the time per pair of each, their ratio and how many pairs "uncertain"
kept from the LLM. --n 0 skips the bare comparison.

    .venv/bin/python bench/label.py --n 3
    .venv/bin/python bench/label.py --n 3 --model local:/path/to/other.gguf
    .venv/bin/python bench/label.py --n 2 --encoder encoder:/path/to/model-dir
    .venv/bin/python bench/label.py --n 0 --encoder none --combined 20
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.backends import get_backend
from classifier.config import LabelSettings, load_theses
from classifier.errors import LabelError
from classifier.label import build_request, label_article


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="local")
    ap.add_argument("--gold", default=str(ROOT / "eval" / "gold" / "seed.jsonl"))
    ap.add_argument("--n", type=int, default=3, help="articles (each is labeled twice)")
    ap.add_argument("--theses", default=str(ROOT / "theses.toml"))
    ap.add_argument("--encoder", default="encoder", help="encoder spec, or none")
    ap.add_argument("--combined", type=int, default=0, metavar="N",
                    help="time the combined labeler, llm = all vs uncertain, on N gold items")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    settings = LabelSettings()
    theses = load_theses(args.theses)
    items = [json.loads(line) for line in Path(args.gold).read_text().splitlines() if line.strip()]
    everything = items
    # spread over theses and lengths: every k-th item
    step = max(1, len(items) // max(1, args.n))
    items = items[::step][: args.n]
    t0 = time.perf_counter()
    backend = get_backend(args.model, settings)
    load_s = time.perf_counter() - t0
    if backend.name != "local":
        raise SystemExit("the bare baseline is llama.cpp in-process: use --model local[:PATH]")
    llm = backend.llm  # type: ignore[attr-defined]
    print(f"{backend.name}:{backend.model}, loaded in {load_s:.1f} s; {len(items)} articles",
          flush=True)

    # warm the cache with the fixed system prompt once, for both sides alike
    _, warm = build_request(theses.get(everything[0]["thesis"]), title="warm-up", text="warm-up",
                            settings=settings)
    llm.create_chat_completion(messages=list(warm.messages)[:1] + [
        {"role": "user", "content": "ok"}], max_tokens=1, temperature=0)

    rows: list[dict] = []
    for i, item in enumerate(items):
        thesis, art = theses.get(item["thesis"]), item["article"]

        def bare() -> tuple[float, dict]:
            _, req = build_request(thesis, title=art["title"], text=art["text"],
                                   source=art.get("source"), settings=settings)
            t = time.perf_counter()
            out = llm.create_chat_completion(
                messages=list(req.messages), temperature=0.0, seed=settings.seed,
                max_tokens=req.max_tokens,
                response_format={"type": "json_object", "schema": req.schema})
            return time.perf_counter() - t, out["usage"]

        def ours() -> tuple[float, dict, int, str]:
            t = time.perf_counter()
            try:
                out = label_article(backend, thesis, title=art["title"], text=art["text"],
                                    source=art.get("source"), settings=settings)
                usage = {"prompt_tokens": out.meta.tokens_in,
                         "completion_tokens": out.meta.tokens_out}
                return time.perf_counter() - t, usage, out.meta.attempts, "labeled"
            except LabelError as e:
                calls = getattr(e, "calls", [])
                usage = {"prompt_tokens": sum(c.tokens_in for c in calls),
                         "completion_tokens": sum(c.tokens_out for c in calls)}
                return (time.perf_counter() - t, usage, len(calls),
                        getattr(e, "error_type", "error"))

        if i % 2 == 0:
            b_s, b_u = bare()
            o_s, o_u, attempts, state = ours()
        else:
            o_s, o_u, attempts, state = ours()
            b_s, b_u = bare()
        rows.append({"id": item["id"], "bare_s": b_s, "ours_s": o_s, "attempts": attempts,
                     "state": state, "bare_prompt_tokens": b_u["prompt_tokens"],
                     "bare_completion_tokens": b_u["completion_tokens"],
                     "ours_prompt_tokens": o_u["prompt_tokens"],
                     "ours_completion_tokens": o_u["completion_tokens"],
                     "article_chars": len(art["text"])})
        r = rows[-1]
        print(f"{item['id']}: bare {b_s:.1f} s, ours {o_s:.1f} s ({attempts} attempt(s), {state}); "
              f"prompt tokens {r['bare_prompt_tokens']}, completion {r['bare_completion_tokens']} / "
              f"{r['ours_completion_tokens']}", flush=True)

    comb = combined_times(backend, everything, args.combined, theses) if args.combined else None
    if comb:
        print(f"\ncombined labeler on {comb['n']} gold pairs, same LLM instance: llm = all "
              f"{comb['all_mean_s']:.2f} s per pair (p50 {comb['all_p50_s']:.2f}), llm = uncertain "
              f"{comb['uncertain_mean_s']:.2f} s (p50 {comb['uncertain_p50_s']:.2f}): "
              f"{comb['all_mean_s'] / comb['uncertain_mean_s']:.2f}x faster; the LLM skipped "
              f"{comb['skipped']} of {comb['n']} pairs (sure at {comb['sure']})")
    if not rows:
        if args.json_out:
            Path(args.json_out).write_text(json.dumps({"combined": comb}, indent=2))
        return
    bare_total = sum(r["bare_s"] for r in rows)
    ours_total = sum(r["ours_s"] for r in rows)
    one_attempt = [r for r in rows if r["attempts"] == 1]
    ratio_1 = (sum(r["ours_s"] for r in one_attempt) / sum(r["bare_s"] for r in one_attempt)
               if one_attempt else float("nan"))
    tokens = [r["bare_prompt_tokens"] + r["bare_completion_tokens"] for r in rows]
    print(f"\nours / bare, all pairs: {ours_total / bare_total:.2f}x "
          f"(ours {ours_total:.1f} s, bare {bare_total:.1f} s; re-asks count against ours)")
    print(f"ours / bare, pairs answered in one attempt ({len(one_attempt)}): {ratio_1:.2f}x")
    print(f"tokens per article (prompt + completion, one attempt): mean "
          f"{statistics.mean(tokens):.0f}, max {max(tokens)}; prompt max "
          f"{max(r['bare_prompt_tokens'] for r in rows)}")
    print(f"pairs per minute through our labeler: {60 * len(rows) / ours_total:.2f}")
    enc = encoder_times(args.encoder, args.gold, theses, settings) if args.encoder != "none" else None
    if enc:
        llm_ms = sorted(1000 * r["ours_s"] for r in rows)
        print(f"\nencoder {enc['model']} on {enc['n']} gold pairs: p50 {enc['p50_ms']:.0f} ms, "
              f"p95 {enc['p95_ms']:.0f} ms per pair (load {enc['load_s']:.1f} s); LLM above: "
              f"p50 {statistics.median(llm_ms):.0f} ms; LLM p50 / encoder p50: "
              f"{statistics.median(llm_ms) / enc['p50_ms']:.0f}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "ratio": ours_total / bare_total,
                                                   "ratio_one_attempt": ratio_1, "encoder": enc,
                                                   "combined": comb},
                                                  indent=2))


def combined_times(llm, items: list[dict], n: int, theses) -> dict:
    """The loaded LLM backend + gold items → per-pair seconds of the combined labeler with
    llm = all and llm = uncertain on n items (every k-th), alternating which runs first."""
    step = max(1, len(items) // n)
    chosen = items[::step][:n]
    sides = {}
    for policy in ("all", "uncertain"):
        settings = LabelSettings(llm=policy)
        sides[policy] = (get_backend("combined", settings, llm=llm), settings)
    times: dict[str, list[float]] = {"all": [], "uncertain": []}
    skipped = 0
    for i, item in enumerate(chosen):
        thesis, art = theses.get(item["thesis"]), item["article"]
        for policy in (("all", "uncertain") if i % 2 == 0 else ("uncertain", "all")):
            backend, settings = sides[policy]
            t = time.perf_counter()
            try:
                out = label_article(backend, thesis, title=art["title"], text=art["text"],
                                    source=art.get("source"), settings=settings)
                if policy == "uncertain" and out.label.proposals["llm_status"] == "skipped":
                    skipped += 1
            except LabelError:
                pass
            times[policy].append(time.perf_counter() - t)
        print(f"{item['id']}: all {times['all'][-1]:.1f} s, uncertain {times['uncertain'][-1]:.1f} s",
              flush=True)
    return {"n": len(chosen), "skipped": skipped, "sure": LabelSettings().llm_sure,
            **{f"{k}_mean_s": statistics.mean(v) for k, v in times.items()},
            **{f"{k}_p50_s": statistics.median(v) for k, v in times.items()}}


def encoder_times(spec: str, gold: str, theses, settings) -> dict:
    """Encoder spec + gold file → per-pair times through label_article (after one warm-up)."""
    import numpy as np
    t0 = time.perf_counter()
    enc = get_backend(spec, settings)
    load_s = time.perf_counter() - t0
    items = [json.loads(line) for line in Path(gold).read_text().splitlines() if line.strip()]
    warm = items[0]
    label_article(enc, theses.get(warm["thesis"]), title=warm["article"]["title"],
                  text=warm["article"]["text"], settings=settings)
    ms = []
    for item in items:
        t = time.perf_counter()
        label_article(enc, theses.get(item["thesis"]), title=item["article"]["title"],
                      text=item["article"]["text"], source=item["article"].get("source"),
                      settings=settings)
        ms.append(1000 * (time.perf_counter() - t))
    return {"model": enc.model, "n": len(ms), "load_s": load_s,
            "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95))}


if __name__ == "__main__":
    main()
