"""The eval harness: gold items in, figures with intervals out.

    gold.py      gold JSONL files → EvalItems (+ file and item hashes)
    adapters/    FNC-1, ARC, Climate-FEVER, PERSPECTRUM from ../shared/corpora → EvalItems
    runner.py    label the items with any backend; run.json + predictions.jsonl, resumable
    metrics.py   per-field accuracy/macro-F1, κ, confusion, ECE, triggers, FNC-1 score, intervals
    report.py    report.md + report.html with matplotlib images
    compare.py   two runs → deltas with paired intervals, exact McNemar, changed items
    gate.py      the CI gate against eval/baseline.json
    export.py    editors' decisions → gold items (source "review")
"""
