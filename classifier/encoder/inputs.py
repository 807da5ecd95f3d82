"""What the encoder reads: the thesis (statement + scope) against the article (title + the
sentences most similar to the thesis, in their own order, as many as fit the window).

Sentences keep their character spans in the article text, so the backend's quotes are the
article's own words by construction. Similarity is lexical (shared content-word stems, rarer
words weighing more) with a bonus for the lede: it costs microseconds, needs no second model,
and only matters for articles longer than the window.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from classifier.config import ThesisConfig

_SENT_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])|\n\s*\n|\n(?=\s*[-•*])")
_WORD = re.compile(r"[A-Za-zÀ-ÿ0-9]+")
_STOP = frozenset("""a an and are as at be been but by for from has have in into is it its of on or
that the their this to was were will with which who than then there these those not no more most
over under after before about said says would could should may might can also new per""".split())
LEAD_BONUS = (1.0, 0.5)  # the first two sentences usually state the news


def thesis_text(thesis: ThesisConfig) -> str:
    """Thesis → the text the encoder reads for it: statement, then scope when there is one."""
    scope = thesis.scope.strip()
    return f"{thesis.statement.strip()} Scope: {scope}" if scope else thesis.statement.strip()


@dataclass(frozen=True)
class Sentence:
    """One sentence of the article: its text and where it stands in the article text."""

    start: int
    end: int
    text: str


def split_sentences(text: str) -> list[Sentence]:
    """Article text → its sentences with character spans (paragraph breaks always split)."""
    out: list[Sentence] = []
    pos = 0
    for m in [*_SENT_END.finditer(text), None]:
        end = m.start() if m else len(text)
        chunk = text[pos:end]
        stripped = chunk.strip()
        if stripped:
            s = pos + (len(chunk) - len(chunk.lstrip()))
            out.append(Sentence(s, s + len(stripped), stripped))
        if m is None:
            break
        pos = m.end()
    return out


def _stems(text: str) -> set[str]:
    return {w.lower()[:6] for w in _WORD.findall(text) if len(w) > 2 and w.lower() not in _STOP}


def rank_sentences(thesis: ThesisConfig, sentences: list[Sentence]) -> list[int]:
    """Thesis + sentences → sentence indices, most similar to the thesis first."""
    query = _stems(" ".join([thesis.statement, thesis.scope, " ".join(thesis.keywords)]))
    sets = [_stems(s.text) for s in sentences]
    df: dict[str, int] = {}
    for st in sets:
        for w in st & query:
            df[w] = df.get(w, 0) + 1
    n = len(sentences)
    scores = []
    for i, st in enumerate(sets):
        score = sum(math.log(1 + n / df[w]) for w in st & query) / math.sqrt(1 + len(st))
        scores.append(score + (LEAD_BONUS[i] if i < len(LEAD_BONUS) else 0.0))
    return sorted(range(n), key=lambda i: (-scores[i], i))


@dataclass(frozen=True)
class Passages:
    """The article as the encoder reads it: title + chosen sentences, with their spans there."""

    text: str
    sentences: tuple[Sentence, ...]  # spans in the *article* text
    spans: tuple[tuple[int, int], ...]  # the same sentences' spans in `text`


def select(thesis: ThesisConfig, title: str, text: str, budget: int, count) -> Passages:
    """Thesis + article + token budget + token counter → title and the best sentences that fit,
    in article order (a sentence longer than the whole budget is cut by the tokenizer later)."""
    sentences = split_sentences(text)
    head = title.strip()
    used = count(head) + 1 if head else 0
    lengths = [count(s.text) for s in sentences]
    if used + sum(lengths) <= budget:
        chosen = list(range(len(sentences)))
    else:
        chosen = []
        for i in rank_sentences(thesis, sentences):
            if used + lengths[i] <= budget or not chosen:
                chosen.append(i)
                used += lengths[i]
        chosen.sort()
    parts, spans = ([head] if head else []), []
    pos = len(head) + 1 if head else 0
    for i in chosen:
        spans.append((pos, pos + len(sentences[i].text)))
        parts.append(sentences[i].text)
        pos += len(sentences[i].text) + 1
    return Passages(text="\n".join(parts), sentences=tuple(sentences[i] for i in chosen),
                    spans=tuple(spans))


@dataclass(frozen=True)
class Encoded:
    """One pair as token ids, with what is needed to map tokens back to article sentences."""

    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int]]  # character span of each token in its own segment
    segments: list[int | None]  # 0 thesis, 1 passages, None special tokens
    passages: Passages


class Featurizer:
    """Tokenizer + window length → (thesis, article) pairs as encoder inputs."""

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length

    def count(self, text: str) -> int:
        """Text → its token count without special tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    def encode(self, thesis: ThesisConfig, title: str, text: str) -> Encoded:
        """Thesis + article → token ids of "[CLS] thesis [SEP] title + passages [SEP]"."""
        first = thesis_text(thesis)
        budget = max(16, self.max_length - self.count(first) - 3)
        passages = select(thesis, title, text, budget, self.count)
        enc = self.tokenizer(first, passages.text, truncation="longest_first",
                             max_length=self.max_length, return_offsets_mapping=True)
        return Encoded(input_ids=enc["input_ids"], token_type_ids=enc["token_type_ids"],
                       offsets=[tuple(o) for o in enc["offset_mapping"]],
                       segments=list(enc.sequence_ids()), passages=passages)


def load_tokenizer(base):
    """Base weights folder → its fast tokenizer, offline."""
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(base), local_files_only=True)
