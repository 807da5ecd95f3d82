"""The combined backend: the evidence encoder on every pair, the LLM where the policy asks for it,
and the combiner deciding field by field (`--model combined`, the default).

    get_backend("combined")                  encoder (active or shipped) + LLM from --llm /
                                             EVIDENCE_MODEL / [label] llm_model, else local
    get_backend("combined", llm="openai:gpt-4o-mini", encoder="/path/model-dir")

The stored label: class fields and confidence from the combiner (the encoder's heads when no
combiner is fitted); rationale and quotes from the LLM when it answered validly (its quotes were
checked against the article like any LLM's), else the encoder's; the trigger is the LLM's only
when the combined label is relevant and its direction agrees with the trigger's (up: supports,
down: undermines). `Label.proposals` keeps both opinions and which side decided each field
(classifier/combine/provenance.py). An LLM that fails or is unavailable costs the pair nothing:
the encoder's label is stored with the reason, and an unavailable LLM is not tried again by the
same backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from classifier.backends.base import Backend, LabelRequest, Record
from classifier.backends.encoder import EncoderBackend
from classifier.combine import policy as llm_policy
from classifier.combine.combiner import Combiner
from classifier.combine.provenance import FORMAT, differing, opinion
from classifier.config import LabelSettings
from classifier.errors import BackendUnavailable, LabelingFailed, TransportError
from classifier.records import Label

TRIGGER_DIRECTION = {"up": "supports", "down": "undermines"}


class CombinedBackend:
    """Encoder + LLM (+ combiner) behind the one labeling seam."""

    name = "combined"

    def __init__(self, llm: Backend | None, *, settings: LabelSettings | None = None,
                 encoder: str | Path | None = None, llm_down: str | None = None) -> None:
        settings = settings or LabelSettings()
        self.encoder = EncoderBackend(encoder, settings=settings)
        self.encoder_version = self.encoder.model
        self.combiner = Combiner.load(self.encoder.folder, self.encoder_version)
        self.llm = llm
        self.llm_down = llm_down  # why the LLM cannot be used (then the encoder labels alone)
        self.policy = settings.llm if llm is not None or llm_down else "none"
        self.sure = settings.llm_sure
        llm_id = f"{llm.name}:{llm.model}" if llm is not None else "no-llm"
        self.model = (f"{self.encoder_version}+{self.combiner.version or 'encoder-decides'}"
                      f"+{llm_id}+{self.policy}")[:300]

    @property
    def paid_part(self) -> tuple[str, str] | None:
        """(backend name, model) whose price the LLM part pays (None: no LLM, free)."""
        return (self.llm.name, self.llm.model) if self.llm is not None else None

    def label(self, request: LabelRequest, record: Record) -> Label:
        """Request → the combined label, with both opinions in `proposals`."""
        enc_label, j = self.encoder.label_and_judge(request, record)
        llm_label, status, reason = self._ask(request, record, j["probs"])
        llm_model = f"{self.llm.name}:{self.llm.model}" if self.llm is not None else None
        return self._combine(request, enc_label, j, llm_label, llm_model, status, reason)

    def rescore(self, request: LabelRequest, record: Record, proposals: dict[str, Any]) -> Label:
        """A stored combined label's request + proposals → the label this encoder and combiner
        make of it, with the LLM's stored answer (the LLM is not asked again)."""
        enc_label, j = self.encoder.label_and_judge(request, record)
        llm = proposals.get("llm")
        llm_label = None if not llm else Label(
            relevant=llm["relevant"], evidence_type=llm.get("evidence_type"),
            direction=llm.get("direction"), strength=llm.get("strength"),
            trigger=llm.get("trigger"), confidence=llm["confidence"],
            rationale=llm.get("rationale") or "", quotes=llm.get("quotes") or [])
        return self._combine(request, enc_label, j, llm_label, llm["model"] if llm else None,
                             proposals.get("llm_status", "skipped"), proposals.get("llm_reason"))

    def _ask(self, request: LabelRequest, record: Record, probs: dict[str, list[float]]
             ) -> tuple[Label | None, str, str | None]:
        """→ (the LLM's label or None, 'answered' | 'skipped' | 'failed', why not answered)."""
        if self.llm_down is not None:
            return None, "skipped", f"LLM unavailable: {self.llm_down}"
        if self.llm is None:
            return None, "skipped", "no LLM configured"
        ask, reason = llm_policy.ask_llm(self.policy, probs, self.sure)
        if not ask:
            return None, "skipped", reason
        try:
            return self.llm.label(request, record), "answered", None
        except BackendUnavailable as e:
            self.llm_down = str(e)
            return None, "failed", f"LLM unavailable: {e}"
        except (LabelingFailed, TransportError) as e:
            return None, "failed", f"LLM {e.error_type}: {str(e)[:300]}"

    def _combine(self, request: LabelRequest, enc_label: Label, j: dict[str, Any],
                 llm_label: Label | None, llm_model: str | None, status: str,
                 reason: str | None) -> Label:
        enc = opinion(enc_label, model=self.encoder_version, probs=j["probs"])
        llm = opinion(llm_label, model=llm_model or "llm", text=True) if llm_label else None
        choice, conf, decided = self.combiner.decide(j["probs"], llm, enc_label.confidence)
        return self._assemble(request, enc_label, llm_label, enc, llm, choice, conf, decided,
                              status, reason)

    def _assemble(self, request: LabelRequest, enc_label: Label, llm_label: Label | None,
                  enc: dict[str, Any], llm: dict[str, Any] | None, choice: dict[str, Any],
                  conf: float, decided: dict[str, str], status: str, reason: str | None) -> Label:
        relevant = bool(choice["relevant"])
        text_side = llm_label if llm_label is not None and llm_label.relevant == relevant else None
        if text_side is not None:
            decided.update(rationale="llm", quotes="llm")
            rationale = text_side.rationale
            overruled = differing(llm, choice)
            if overruled:
                said = ", ".join(f"{f} {llm.get(f)}" for f in overruled) if llm else ""
                rationale = (f"[The combined label differs from the LLM's on "
                             f"{', '.join(overruled)} (the LLM said {said}).] " + rationale)
            quotes = list(text_side.quotes) if relevant else []
        else:
            decided.update(rationale="encoder", quotes="encoder")
            rationale = enc_label.rationale
            if relevant and not enc_label.relevant:
                rationale = ("Combined judgment: relevant (the encoder alone said not relevant); "
                             "no LLM reading backs it. " + rationale)
            quotes = list(enc_label.quotes) if relevant and enc_label.relevant else []
        trigger = None
        if relevant and llm_label is not None and llm_label.trigger:
            spec = next((t for t in request.thesis.trigger if t.id == llm_label.trigger), None)
            if spec is not None and TRIGGER_DIRECTION[spec.direction] == choice["direction"]:
                trigger = llm_label.trigger
        decided["trigger"] = "llm" if trigger else "none"
        proposals = {"format": FORMAT, "encoder": enc, "llm": llm, "llm_status": status,
                     "llm_reason": reason, "decided": decided,
                     "combiner": self.combiner.version, "disagree": differing(enc, llm)}
        return Label(relevant=relevant, evidence_type=choice["evidence_type"],
                     direction=choice["direction"], strength=choice["strength"], trigger=trigger,
                     confidence=conf, rationale=rationale[:1200], quotes=quotes,
                     proposals=proposals)
