"""When the combined labeler asks the LLM: `[label] llm` in evidence.toml.

    all        every routed pair (the default: every label gets a written rationale)
    uncertain  only pairs the encoder is not sure of: relevance below `llm_sure`, or judged
               relevant with its direction below `llm_sure` (sure rejections and sure
               directions skip the LLM)
    relevant   only pairs the encoder judges relevant (P(relevant) >= 0.5)
    none       never: the encoder labels alone (fastest; no LLM rationale, no trigger)

A skipped pair's label says why in `labels.proposals.llm_reason`; `evidence calls` and the run
summary count the skips.
"""

from __future__ import annotations

from typing import Literal

Policy = Literal["all", "uncertain", "relevant", "none"]
POLICIES: tuple[str, ...] = ("all", "uncertain", "relevant", "none")


def ask_llm(policy: str, probs: dict[str, list[float]], sure: float) -> tuple[bool, str | None]:
    """Policy + the encoder's head probabilities + the sureness bar → (ask?, why it was skipped)."""
    p_rel = float(probs["relevant"][1])
    if policy == "all":
        return True, None
    if policy == "none":
        return False, "llm = none: the encoder labels alone"
    if policy == "relevant":
        if p_rel >= 0.5:
            return True, None
        return False, f"llm = relevant: the encoder judges it not relevant ({1 - p_rel:.2f})"
    if policy == "uncertain":
        sure_rel = max(p_rel, 1 - p_rel)
        if sure_rel < sure:
            return True, None
        if p_rel < 0.5:
            return False, (f"llm = uncertain: the encoder is sure it is not relevant "
                           f"({sure_rel:.2f} >= {sure:.2f})")
        p_dir = max(probs["direction"])
        if p_dir < sure:
            return True, None
        return False, (f"llm = uncertain: the encoder is sure (relevant {sure_rel:.2f}, direction "
                       f"{p_dir:.2f} >= {sure:.2f})")
    raise ValueError(f"unknown llm policy {policy!r}; use one of {', '.join(POLICIES)}")
