"""Stage 4, route: the real all-MiniLM-L6-v2 model on a handful of texts, and stored decisions."""

from __future__ import annotations

import hashlib

import pytest
from sqlalchemy import Engine, insert, select

from classifier.config import FeedConfig, FeedsFile, RouteSettings, ThesisConfig, TriggerConfig
from classifier.errors import RouterUnavailable
from classifier.records import Article
from classifier.route import Router, keyword_hits, plan_routes, route, route_new_articles
from classifier.store.engine import utcnow
from classifier.store.tables import articles, feeds, pairs, skips, stories

OSS = ThesisConfig(
    id="oss-parity", title="Open-source frontier parity", probability=0.75,
    statement="Open-weights models match or beat the best contemporaneous closed frontier "
              "models on publicly available reasoning and coding benchmarks.",
    scope="Benchmark performance on public reasoning and coding evaluations only.",
    keywords=["open-weights", "benchmark", "Llama", "Qwen", "SWE-bench"],
    trigger=[TriggerConfig(id="below-60", direction="down", to=0.6,
                           condition="Independent evaluations show the best open-weights models "
                                     "falling further behind closed frontier models.")])
EV = ThesisConfig(
    id="ev-share-eu", title="Battery-electric cars pass a quarter of EU new-car sales",
    probability=0.55,
    statement="Battery-electric vehicles exceed 25% of new passenger-car registrations in the "
              "European Union in calendar year 2027.",
    keywords=["electric vehicle", "EV", "battery-electric", "registrations", "ACEA"])

LLAMA_MODEL = ("Meta releases Llama 5 weights; independent tests put it level with GPT on coding",
               "Meta published the weights of Llama 5. An independent evaluation found the open "
               "model scored within a point of the leading closed model on SWE-bench Verified and "
               "LiveCodeBench, the first time an open release has matched the frontier on coding.")
LLAMA_ANIMAL = ("Llamas guard sheep on Welsh hill farms",
                "On hill farms in Wales, llamas are increasingly used as guard animals. A llama "
                "bonds with a flock of sheep and chases away foxes and stray dogs. Farmers say one "
                "llama can protect up to 300 ewes and needs little care beyond shearing once a year.")
EV_NEWS = ("Battery-electric cars take 17% of EU registrations in third quarter",
           "New registrations of battery-electric cars in the European Union rose 32 percent in "
           "the third quarter, giving them a market share of 17.4 percent, ACEA said on Thursday.")
RECIPE = ("A sourdough loaf for beginners",
          "Mix flour, water and starter, leave the dough overnight, fold it twice, shape it and "
          "bake it in a hot covered pot for forty minutes. Let it cool before slicing.")


def art(title: str, text: str) -> Article:
    sha = hashlib.sha256(text.encode()).hexdigest()
    url = f"https://example.org/{sha[:8]}"
    return Article(url=url, canonical_url=url, title=title, text=text, text_sha256=sha)


@pytest.fixture(scope="module")
def router() -> Router:
    """One real model for the module (loading takes seconds)."""
    return Router(RouteSettings())


def test_relevant_article_outscores_unrelated(router: Router) -> None:
    assert router.score(art(*LLAMA_MODEL), OSS).score > router.score(art(*RECIPE), OSS).score + 0.2
    assert router.score(art(*EV_NEWS), EV).score > router.score(art(*LLAMA_MODEL), EV).score + 0.2


def test_llama_the_animal_does_not_outrank_llama_the_model(router: Router) -> None:
    model, animal = router.score(art(*LLAMA_MODEL), OSS), router.score(art(*LLAMA_ANIMAL), OSS)
    assert "Llama" in animal.keywords  # the keyword matches both...
    assert model.score > animal.score + 0.2  # ...the embedding tells them apart
    assert route(art(*LLAMA_MODEL), OSS, router=router).send
    assert not route(art(*LLAMA_ANIMAL), OSS, router=router).send


def test_route_decision_carries_score_and_threshold(router: Router) -> None:
    d = route(art(*RECIPE), OSS, router=router)
    assert not d.send and d.thesis_id == "oss-parity"
    assert f"{d.score:.3f}" in d.reason and "threshold" in d.reason
    off = route(art(*RECIPE), OSS.model_copy(update={"route": False}), router=router)
    assert off.send and off.score == d.score
    strict = OSS.model_copy(update={"route_threshold": 0.99})
    assert not route(art(*LLAMA_MODEL), strict, router=router).send


def test_other_languages_can_be_sent_unscored(router: Router) -> None:
    french = art("La facture du calcul s'effondre pour les petits laboratoires d'IA",
                 "Le prix de location d'un accélérateur est tombé sous un dollar de l'heure; "
                 "plusieurs petits laboratoires publient les poids de leurs modèles.")
    french = french.model_copy(update={"language": "fr"})
    assert not route(french, OSS, router=router).send  # scored by an English model: too low
    lenient = Router(RouteSettings(other_languages="send"), model=router.model)
    d = route(french, OSS, router=lenient)
    assert d.send and "English only" in d.reason
    assert not route(art(*RECIPE), OSS, router=lenient).send  # English articles are still scored


def test_keyword_rules() -> None:
    kws = ["EV", "electric vehicle", "Llama", "AI Act"]
    assert keyword_hits("Electric vehicles and EVs", kws) == ("EV", "electric vehicle")
    assert keyword_hits("every event; eve", kws) == ()
    assert keyword_hits("llama wool", kws) == ()  # capitalised keywords match exactly
    assert keyword_hits("the EU AI\nAct", kws) == ("AI Act",)


def test_missing_model_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RouterUnavailable, match="no sentence-transformers model"):
        Router(RouteSettings(model_path=str(tmp_path))).score(art(*RECIPE), OSS)


# -- stored decisions --------------------------------------------------------------------------


def add_feed(engine: Engine, name: str) -> int:
    with engine.begin() as c:
        q = insert(feeds).values(name=name, url=f"https://example.org/{name}.xml",
                                 created_at=utcnow()).returning(feeds.c.id)
        return c.execute(q).scalar_one()


def add_article(engine: Engine, title: str, text: str, *, feed_id: int | None = None,
                story_id: int | None = None) -> int:
    a = art(title, text)
    with engine.begin() as c:
        if story_id is None:
            story_id = c.execute(insert(stories).values(created_at=utcnow())
                                 .returning(stories.c.id)).scalar_one()
        return c.execute(insert(articles).values(
            url=a.url, canonical_url=a.canonical_url, title=title, text=text,
            text_sha256=a.text_sha256, story_id=story_id, feed_id=feed_id,
            created_at=utcnow()).returning(articles.c.id)).scalar_one()


def stored(engine: Engine) -> dict[tuple[int, str], tuple[str, float | None]]:
    with engine.connect() as c:
        return {(a, t): (s, sc) for a, t, s, sc in c.execute(select(
            pairs.c.article_id, pairs.c.thesis_id, pairs.c.state, pairs.c.route_score))}


def skip_rows(engine: Engine) -> dict[tuple[int, str], tuple[str, str, str, str]]:
    with engine.connect() as c:
        return {(a, t): (k, st, r, d) for a, t, k, st, r, d in c.execute(select(
            skips.c.article_id, skips.c.thesis_id, skips.c.kind, skips.c.stage, skips.c.reason,
            skips.c.detail))}


def test_skip_is_stored_with_score_and_rerun_adds_nothing(engine: Engine, router: Router) -> None:
    good = add_article(engine, *LLAMA_MODEL)
    bad = add_article(engine, *LLAMA_ANIMAL)
    assert [p.article_id for p in plan_routes(engine, [OSS], FeedsFile(), router=router,
                                              limit=1)] == [good]
    calls: list[tuple[str, int, int]] = []
    assert route_new_articles(engine, [OSS], FeedsFile(), router=router,
                              progress=lambda *a: calls.append(a)) == (1, 1)
    assert calls[-1] == ("route", 2, 2)
    rows = stored(engine)
    assert rows[(good, "oss-parity")][0] == "pending"
    state, score = rows[(bad, "oss-parity")]
    assert state == "skipped" and score is not None and score < router.settings.threshold
    kind, stage, reason, detail = skip_rows(engine)[(bad, "oss-parity")]
    assert (kind, stage, reason) == ("skip", "route", "low_score")
    assert f"{score:.3f}" in detail
    assert (good, "oss-parity") not in skip_rows(engine)
    # idempotent: nothing new to route, and a new thesis routes only its own pairs
    assert route_new_articles(engine, [OSS], FeedsFile(), router=router) == (0, 0)
    assert route_new_articles(engine, [OSS, EV], FeedsFile(), router=router) == (0, 2)
    assert len(stored(engine)) == 4


def test_thesis_with_routing_off_sends_everything(engine: Engine, router: Router) -> None:
    ids = [add_article(engine, *t) for t in (LLAMA_ANIMAL, RECIPE, EV_NEWS)]
    off = OSS.model_copy(update={"route": False})
    assert route_new_articles(engine, [off], FeedsFile(), router=router) == (3, 0)
    rows = stored(engine)
    assert all(rows[(i, "oss-parity")][0] == "pending" for i in ids)
    assert all(rows[(i, "oss-parity")][1] is not None for i in ids)  # scores kept for later tuning
    assert skip_rows(engine) == {}


def test_feed_restriction_is_honoured(engine: Engine, router: Router) -> None:
    ev_only, all_feed = add_feed(engine, "ev-wire"), add_feed(engine, "tech-wire")
    a = add_article(engine, *LLAMA_MODEL, feed_id=ev_only)  # relevant to OSS, but feed says EV only
    b = add_article(engine, *LLAMA_MODEL[:1], LLAMA_MODEL[1] + " More.", feed_id=all_feed)
    fl = FeedsFile(feed=[FeedConfig(name="ev-wire", url="https://example.org/ev.xml",
                                    theses=["ev-share-eu"]),
                         FeedConfig(name="tech-wire", url="https://example.org/t.xml")])
    route_new_articles(engine, [OSS, EV], fl, router=router)
    rows, sk = stored(engine), skip_rows(engine)
    assert rows[(a, "oss-parity")] == ("skipped", None)
    assert sk[(a, "oss-parity")][2] == "feed_not_watched"
    assert rows[(a, "ev-share-eu")][0] == "skipped" and sk[(a, "ev-share-eu")][2] == "low_score"
    assert rows[(b, "oss-parity")][0] == "pending"


def test_one_call_per_story(engine: Engine, router: Router) -> None:
    first = add_article(engine, *LLAMA_MODEL)
    with engine.connect() as c:
        story = c.execute(select(articles.c.story_id).where(articles.c.id == first)).scalar_one()
    copy = add_article(engine, LLAMA_MODEL[0], LLAMA_MODEL[1] + " (Reuters)", story_id=story)
    plan = plan_routes(engine, [OSS], FeedsFile(), router=router)
    assert [(p.article_id, p.state) for p in plan] == [(first, "pending"), (copy, "skipped")]
    assert stored(engine) == {}  # planning writes nothing
    assert route_new_articles(engine, [OSS], FeedsFile(), router=router) == (1, 1)
    kind, stage, reason, detail = skip_rows(engine)[(copy, "oss-parity")]
    assert reason == "same_story" and f"article {first}" in detail
    # a later sibling, routed in another run, is also held back by the stored pair
    late = add_article(engine, LLAMA_MODEL[0], LLAMA_MODEL[1] + " (AP)", story_id=story)
    assert route_new_articles(engine, [OSS], FeedsFile(), router=router) == (0, 1)
    assert skip_rows(engine)[(late, "oss-parity")][2] == "same_story"


def test_cli_route_dry_run_then_store(engine: Engine, db_url: str) -> None:
    import json

    from click.testing import CliRunner

    from classifier.cli import main
    from tests.conftest import ROOT

    a = add_article(engine, *EV_NEWS)
    theses = str(ROOT / "theses.toml")
    args = ["route", "--db", db_url, "--theses", theses, "--feeds", "/nonexistent.toml"]
    dry = CliRunner().invoke(main, [*args, "--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    plan = {p["thesis_id"]: p for p in json.loads(dry.stdout)}
    assert set(plan) == {"oss-parity", "eu-ai-act-delay", "ev-share-eu"}
    assert plan["ev-share-eu"]["state"] == "pending" and plan["ev-share-eu"]["article_id"] == a
    assert plan["oss-parity"]["skip_reason"] == "low_score"
    assert stored(engine) == {}
    real = CliRunner().invoke(main, [*args, "--thesis", "ev-share-eu", "--json"])
    assert real.exit_code == 0, real.output
    assert json.loads(real.stdout)["sent"] == 1
    assert stored(engine)[(a, "ev-share-eu")][0] == "pending" and len(stored(engine)) == 1
    bad = CliRunner().invoke(main, [*args, "--thesis", "nope"])
    assert bad.exit_code == 1 and "unknown thesis 'nope'" in bad.output
