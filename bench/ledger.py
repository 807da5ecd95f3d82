"""Thesis-page timeline: the incremental ledger (`running_values`) against the baseline of
recomputing the whole ledger after every approval (what a naive timeline does), same items.

    .venv/bin/python bench/ledger.py            # n = 100, 300, 1000 approved items
Prints seconds for each and the ratio baseline / incremental, and checks both end on the same value.
"""

from __future__ import annotations

import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from classifier import ledger  # noqa: E402
from classifier.config import ThesisConfig, TriggerConfig  # noqa: E402
from classifier.records import Direction, EvidenceType, Strength  # noqa: E402

THESIS = ThesisConfig(id="bench", title="Bench", statement="A thesis.", probability=0.75,
                      trigger=[TriggerConfig(id="up", direction="up", to=0.85, condition="c")])
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def items(n: int, seed: int = 1) -> list[ledger.Evidence]:
    """n random approved items over n/3 stories, one approval per hour."""
    rnd = random.Random(seed)
    return [ledger.Evidence(
        label_id=i, article_id=i, story_id=rnd.randint(1, max(1, n // 3)), title=f"item {i}",
        approved_at=T0 + timedelta(hours=i),
        evidence_type=rnd.choice(list(EvidenceType)), direction=rnd.choice(list(Direction)),
        strength=rnd.choice(list(Strength))) for i in range(1, n + 1)]


def naive(evidence: list[ledger.Evidence], table: ledger.LedgerTable) -> list[float]:
    """Baseline: the full ledger recomputed over each prefix of the approvals."""
    return [ledger.compute_ledger(THESIS, evidence[: k + 1], prior=THESIS.probability,
                                  table=table).suggested for k in range(len(evidence))]


def main() -> None:
    table = ledger.ledger_table(THESIS)
    print(f"{'n':>6} {'baseline s':>11} {'incremental s':>14} {'ratio':>8}  same end value")
    for n in (100, 300, 1000):
        ev = items(n)
        t = time.perf_counter()
        base = naive(ev, table)
        t_base = time.perf_counter() - t
        t = time.perf_counter()
        inc = [p.probability for p in ledger.running_values(THESIS, ev, [], table=table)]
        t_inc = time.perf_counter() - t
        same = abs(base[-1] - inc[-1]) < 1e-12
        print(f"{n:>6} {t_base:>11.3f} {t_inc:>14.4f} {t_base / t_inc:>8.0f}x  {same}")


if __name__ == "__main__":
    main()
