"""The encoder backend: the trained evidence encoder behind the labeling seam.

    get_backend("encoder")          the model shipped in the package (classifier/encoder/shipped)
    get_backend("encoder:PATH")     any model folder `evidence model train` wrote

Every field of the label comes from the network: relevance, evidence type, direction and strength
from its calibrated heads, confidence from the fitted confidence map (the chance the whole label
is right). Quotes are the article's own sentences whose tokens moved the direction head most
(gradient x activation at a middle layer, summed per sentence), verbatim by construction. It proposes no trigger. One
`llm_calls` row per label records the per-head probabilities, the input's length and the time.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

from classifier.backends.base import CallRecord, LabelRequest, Record
from classifier.config import LabelSettings
from classifier.encoder import CLASSES, HEADS, SHIPPED_DIR
from classifier.records import Label

MAX_QUOTES = 2
MAX_QUOTE_CHARS = 400
_CACHE: dict[Path, Any] = {}
_LOCK = threading.Lock()  # one network per folder per process; torch modules are not re-entrant


ATTRIBUTION_LAYER = 3  # gradient x activation at the 4th of 6 layers' output


def _loaded(folder: Path) -> Any:
    """Model folder → (Loaded, Featurizer, capture), once per process: the network is frozen for
    inference and a hook makes the attribution layer's output the start of the autograd graph,
    so the backward pass for quotes runs through 2 layers, not 6 (52 vs 111 ms p50 per pair at
    256 tokens on 2 cores, measured while building it)."""
    from classifier.encoder import card
    from classifier.encoder.inputs import Featurizer, load_tokenizer
    from classifier.encoder.network import base_dir
    key = folder.resolve()
    with _LOCK:
        if key not in _CACHE:
            loaded = card.load(folder)
            for p in loaded.model.parameters():
                p.requires_grad_(False)
            capture: dict[str, Any] = {}

            def hook(_mod: Any, _inp: Any, out: Any) -> Any:
                h = out[0] if isinstance(out, tuple) else out
                h = h.detach().requires_grad_(True)
                capture["h"] = h
                return (h, *out[1:]) if isinstance(out, tuple) else h
            loaded.model.body.encoder.layer[ATTRIBUTION_LAYER].register_forward_hook(hook)
            max_length = int(loaded.card.get("settings", {}).get("max_length", 256))
            _CACHE[key] = (loaded, Featurizer(load_tokenizer(base_dir()), max_length), capture)
        return _CACHE[key]


class EncoderBackend:
    """Labels a pair with the evidence encoder in a model folder (default: the shipped one)."""

    name = "encoder"

    def __init__(self, path: str | Path | None = None, settings: LabelSettings | None = None) -> None:
        self.folder = Path(path) if path else SHIPPED_DIR
        self.loaded, self.featurizer, self._capture = _loaded(self.folder)
        self.model = self.loaded.version
        cal = self.loaded.card.get("calibration", {})
        self.temperatures: dict[str, float] = cal.get("temperatures", {})
        self.mapping: dict[str, float] = cal.get("confidence_map", {"a": 1.0, "b": 0.0})

    def judge(self, thesis: Any, title: str, text: str) -> dict[str, Any]:
        """Thesis + article → probabilities per head, chosen classes, confidence, quotes."""
        import torch

        from classifier.encoder.calibrate import confidence, decide
        from classifier.encoder.network import log_probs
        enc = self.featurizer.encode(thesis, title, text)
        net = self.loaded.model
        ids = torch.tensor([enc.input_ids])
        types = torch.tensor([enc.token_type_ids])
        mask = torch.ones_like(ids)
        with _LOCK, torch.enable_grad():
            lp = log_probs(net(ids, mask, types), self.temperatures)
            probs = {h: lp[h][0].detach().exp().numpy() for h in HEADS}
            choice, joint = decide(probs)
            saliency = None
            if choice["relevant"] == 1:
                h = self._capture["h"]
                lp["direction"][0, choice["direction"]].backward()
                saliency = (h.grad * h).sum(-1).abs()[0].tolist()
        quotes = self._quotes(enc, saliency) if saliency is not None else []
        return {"probs": {h: [round(float(x), 4) for x in probs[h]] for h in HEADS},
                "choice": {h: CLASSES[h][choice[h]] for h in HEADS},
                "confidence": round(confidence(joint, self.mapping), 4),
                "quotes": quotes, "tokens": len(enc.input_ids)}

    @staticmethod
    def _quotes(enc: Any, saliency: list[float]) -> list[str]:
        spans = enc.passages.spans
        score = [0.0] * len(spans)
        count = [0] * len(spans)
        for tok, (seg, (a, _)) in enumerate(zip(enc.segments, enc.offsets, strict=True)):
            if seg != 1:
                continue
            for k, (s, e) in enumerate(spans):
                if s <= a < e:
                    score[k] += saliency[tok]
                    count[k] += 1
                    break
        ranked = sorted((k for k in range(len(spans)) if count[k]),
                        key=lambda k: -score[k] / math.sqrt(count[k]))
        out = []
        for k in ranked[:MAX_QUOTES]:
            q = enc.passages.sentences[k].text
            out.append(q if len(q) <= MAX_QUOTE_CHARS else q[:MAX_QUOTE_CHARS].rsplit(" ", 1)[0])
        return out

    def label(self, request: LabelRequest, record: Record) -> Label:
        """Request → the encoder's label (one call row with its probabilities)."""
        return self.label_and_judge(request, record)[0]

    def label_and_judge(self, request: LabelRequest, record: Record) -> tuple[Label, dict[str, Any]]:
        """Request → (the encoder's label, its judgment: probabilities per head, choice, quotes)."""
        started = time.perf_counter()
        j = self.judge(request.thesis, request.title, request.text)
        c = j["choice"]
        relevant = c["relevant"] == "yes"
        p = j["probs"]
        if relevant:
            lean = "; ".join(f"\"{q[:90]}{'...' if len(q) > 90 else ''}\"" for q in j["quotes"])
            rationale = (f"Evidence encoder {self.model}'s judgment, not a reading: "
                         f"{c['direction']} ({max(p['direction']):.0%}), {c['evidence_type']}, "
                         f"{c['strength']}; relevant at {p['relevant'][1]:.0%}. "
                         + (f"It leaned most on {lean}." if lean else ""))
        else:
            rationale = (f"Evidence encoder {self.model}'s judgment, not a reading: not relevant "
                         f"to the thesis ({p['relevant'][0]:.0%}).")
        label = Label(relevant=relevant,
                      evidence_type=c["evidence_type"] if relevant else None,
                      direction=c["direction"] if relevant else None,
                      strength=c["strength"] if relevant else None, trigger=None,
                      confidence=j["confidence"], rationale=rationale[:1200],
                      quotes=j["quotes"] if relevant else [])
        record(CallRecord(backend=self.name, model=self.model, prompt_hash=request.prompt_hash,
                          schema_hash=None, request={"tokens": j["tokens"], "folder": str(self.folder)},
                          response=json.dumps({"probs": p, "confidence": j["confidence"]}),
                          tokens_in=j["tokens"], latency_ms=(time.perf_counter() - started) * 1000))
        return label, j
