"""Does each open corpus help the encoder? Same written data, same seed, same settings, one
training run per corpus mix; every model scored on the same held-out theses of the written set
(never trained on, never calibrated on), in the same run of this script.

    .venv/bin/python bench/encoder_corpora.py                       # 5 mixes, ~5 min each on 2 cores
    .venv/bin/python bench/encoder_corpora.py --mix none --mix all --epochs 2 --max-length 192

The held-out theses are chosen by --seed (the shipped model uses seed 0; the default here is 1,
so the choice of corpora is not made on the shipped model's own held-out theses). Prints one row
per mix: relevance accuracy, direction macro-F1, undermines recall, ECE, with 95% bootstrap
intervals, and training time. The seed gold set is never used here.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from classifier.encoder.build import BuildOptions, build  # noqa: E402
from classifier.encoder.train import TrainSettings  # noqa: E402

MIXES = {
    "none": [],
    "fnc1+arc": ["fnc1", "arc"],
    "claims": ["perspectrum", "climate-fever", "covid-fact"],
    "all": ["fnc1", "arc", "perspectrum", "climate-fever", "covid-fact"],
    "all-but-covid": ["fnc1", "arc", "perspectrum", "climate-fever"],
}
FIGS = ("relevant.accuracy", "direction.macro_f1", "direction.recall.undermines", "ece")


def _fmt(f: dict | None) -> str:
    if not f or f.get("value") is None:
        return "-"
    ci = f.get("ci") or [None, None]
    band = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci[0] is not None else ""
    return f"{f['value']:.3f}{band}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT / "eval/train/items.jsonl"))
    ap.add_argument("--data-theses", default=str(ROOT / "eval/train/theses.toml"))
    ap.add_argument("--mix", action="append", choices=sorted(MIXES), help="repeat; default all five")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--corpus-scale", type=float, default=1.0)
    ap.add_argument("--heldout-theses", type=int, default=10)
    ap.add_argument("--calibration-theses", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    a = ap.parse_args()
    rows = []
    for mix in a.mix or list(MIXES):
        with tempfile.TemporaryDirectory(prefix=f"enc-{mix}-") as tmp:
            opts = BuildOptions(data=[a.data], data_theses=a.data_theses, out=Path(tmp),
                                settings=TrainSettings(epochs=a.epochs, seed=a.seed,
                                                       max_length=a.max_length),
                                corpora=MIXES[mix], corpus_scale=a.corpus_scale,
                                n_calibration=a.calibration_theses, n_heldout=a.heldout_theses)
            started = time.perf_counter()
            card = build(opts, say=lambda m: print("  " + m, file=sys.stderr))
            figs = card["metrics"]["heldout-theses"]["figures"]
            rows.append({"mix": mix, "examples": card["train_log"]["examples"],
                         "train_s": card["time"]["train_s"], "wall_s": time.perf_counter() - started,
                         **{k: figs.get(k) for k in FIGS}})
            r = rows[-1]
            print(f"{mix:14} n={r['examples']:5}  " + "  ".join(f"{k} {_fmt(r[k])}" for k in FIGS)
                  + f"  train {r['train_s']:.0f} s", flush=True)
    held = card["split"]["counts"]
    print(f"\nheld-out theses: {held.get('heldout')} (seed {a.seed}); every figure on the same items")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
