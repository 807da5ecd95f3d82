"""The evidence encoder: a cross-encoder trained on forecast-style data, beside the LLM labeler.

    inputs.py     thesis text, sentence split, the passages most similar to the thesis
    network.py    MiniLM body + heads (relevance 2, direction 3, evidence type 2, strength ordinal 3)
    data.py       training examples from gold-format files and the open corpora; splits
    train.py      the training loop (checkpoints, resumable, deterministic on CPU for a seed)
    calibrate.py  temperature per head and the confidence map, fitted on held-out theses
    card.py       the model folder: weights, calibration, card (README.md + card.json)
    shipped/      the default model (`--model encoder`), small: only the fine-tuned layers

The backend that labels with it is `classifier.backends.encoder`; `evidence model train` is the
command that makes a model folder.
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"
HEADS = ("relevant", "direction", "evidence_type", "strength")
CLASSES: dict[str, tuple[str, ...]] = {
    "relevant": ("no", "yes"),
    "direction": ("supports", "undermines", "neutral"),
    "evidence_type": ("direct", "circumstantial"),
    "strength": ("weak", "moderate", "strong"),
}
