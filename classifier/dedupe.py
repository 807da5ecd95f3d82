"""Stage 3, dedupe: Article → stored row in a story, or Skip(duplicate_url | duplicate_text).

Three checks, cheapest first:
1. canonical URL (scheme and host case, default ports, tracking parameters, fragments);
2. SHA-256 of the normalised text (NFKC, case-folded, whitespace collapsed): the same article
   reached through another URL or another feed;
3. near-duplicates (syndicated wire copy, light rewrites): a datasketch MinHash over word
   shingles, stored in `articles.minhash`, with locality-sensitive hashing done in the database:
   each signature is cut into `BANDS` bands (datasketch's MinHashLSH parameters for
   `STORY_THRESHOLD`) and each band's hash is a row of `article_bands`. An article whose band
   hashes meet a stored article's and whose estimated Jaccard similarity reaches the threshold
   joins that article's story; otherwise it opens a new story.

Keeping the LSH buckets in a table (not an in-process index) makes it transactional and the same
on SQLite and PostgreSQL, for one process or many workers: one indexed lookup per article.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import numpy as np
from datasketch import MinHash, MinHashLSH
from sqlalchemy import Connection, func, insert, select
from sqlalchemy.exc import IntegrityError

from classifier.records import Article, Skip, SkipReason, Stage, StoredArticle
from classifier.store.engine import utcnow
from classifier.store.tables import article_bands, articles, stories

# -- canonical URL -----------------------------------------------------------------------------

DEFAULT_PORTS = {"http": 80, "https": 443}
# Parameters that say how a reader arrived, never which page: dropped. `utm_*` and friends below.
TRACKING_PREFIXES = ("utm_", "mtm_", "pk_", "oly_", "_hs", "hsa_", "vero_", "trk_")
TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "gclsrc",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "twclid",
        "ttclid",
        "li_fat_id",
        "igshid",
        "mc_cid",
        "mc_eid",
        "mkt_tok",
        "_ga",
        "_gl",
        "_openstat",
        "ncid",
        "cmpid",
        "ocid",
        "sr_share",
        "share",
        "smid",
        "spm",
        "ref_src",
        "ref_url",
        "rss",
        "feature",
        "hsctatracking",
        "s_cid",
        "at_medium",
        "at_campaign",
        "wt.mc_id",
        "cid_source",
    }
)


def canonical_url(url: str) -> str:
    """URL → canonical form: lowercase scheme/host, no default port, tracking params, fragment."""
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # unparseable port or brackets: keep the URL as given, only trimmed
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").rstrip(".")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host
    if parts.username:
        netloc = parts.username + (f":{parts.password}" if parts.password else "") + "@" + netloc
    if port is not None and DEFAULT_PORTS.get(scheme) != port:
        netloc += f":{port}"
    path = _normalise_escapes(parts.path) or ("/" if netloc else "")
    kept = [
        (k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not _is_tracking(k)
    ]
    # order of parameters carries no meaning on news sites; sorting merges ?a=1&b=2 and ?b=2&a=1
    kept.sort(key=lambda kv: kv[0])
    query = urlencode(kept, doseq=True, quote_via=quote, safe="/:@!$'()*+,;=")
    # a "#!" fragment is an old-style client route and names the page; any other is dropped
    fragment = parts.fragment if parts.fragment.startswith("!") else ""
    return urlunsplit((scheme, netloc, path, query, fragment))


def _is_tracking(key: str) -> bool:
    k = key.lower()
    return k in TRACKING_PARAMS or k.startswith(TRACKING_PREFIXES)


def _normalise_escapes(path: str) -> str:
    """Path → the same path with percent-escapes in one spelling (%7e and ~ are one character)."""
    return quote(unquote(path), safe="/:@!$&'()*+,;=~%") if "%" in path else path


# -- text hash ---------------------------------------------------------------------------------

_WS = re.compile(r"\s+")
_WORD = re.compile(r"\w+")


def normalise_text(text: str) -> str:
    """Text → NFKC, case-folded, whitespace collapsed: what the hash and the shingles see."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def text_sha256(text: str) -> str:
    """Text → hex SHA-256 of its normalised form (spacing and case changes: same hash)."""
    return hashlib.sha256(normalise_text(text).encode("utf-8")).hexdigest()


# -- MinHash signatures and bands --------------------------------------------------------------

NUM_PERM = 128
SHINGLE_WORDS = 3
STORY_THRESHOLD = (
    0.4  # estimated Jaccard of word 3-shingles at or above which two texts are one story
)
_LSH = MinHashLSH(threshold=STORY_THRESHOLD, num_perm=NUM_PERM)
BANDS, ROWS = _LSH.b, _LSH.r
_SCHEME = "affine32"  # pinned: stored signatures stay comparable across datasketch upgrades
_TEMPLATE = MinHash(num_perm=NUM_PERM, seed=1, scheme=_SCHEME)


def shingles(text: str, k: int = SHINGLE_WORDS) -> set[bytes]:
    """Text → set of its k-word shingles (normalised words), as bytes for MinHash."""
    words = _WORD.findall(normalise_text(text))
    if len(words) < k:
        return {" ".join(words).encode()} if words else set()
    return {" ".join(words[i : i + k]).encode() for i in range(len(words) - k + 1)}


def signature(text: str) -> np.ndarray:
    """Text → MinHash signature (NUM_PERM uint32 values) over its word shingles."""
    mh = MinHash(num_perm=NUM_PERM, seed=1, scheme=_SCHEME, permutations=_TEMPLATE.permutations)
    mh.update_batch(list(shingles(text)))
    return mh.hashvalues


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Two signatures → estimated Jaccard similarity of the texts' shingle sets."""
    return float(np.mean(a == b)) if len(a) == len(b) else 0.0


def band_keys(sig: np.ndarray) -> list[int]:
    """Signature → one signed 64-bit key per LSH band (band number mixed in: no cross-band hits)."""
    keys = []
    for band in range(BANDS):
        chunk = np.ascontiguousarray(sig[band * ROWS : (band + 1) * ROWS]).tobytes()
        digest = hashlib.blake2b(chunk, digest_size=8, person=band.to_bytes(2, "big")).digest()
        keys.append(int.from_bytes(digest, "big", signed=True))
    return keys


def _pack(sig: np.ndarray) -> bytes:
    return sig.astype("<u4").tobytes()


def _unpack(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype="<u4").astype(np.uint64)


# -- storing -----------------------------------------------------------------------------------


def find_duplicate(conn: Connection, article: Article) -> Skip | None:
    """Article → Skip if its canonical URL or text hash is already stored, else None."""
    hit = conn.execute(
        select(articles.c.id).where(articles.c.canonical_url == article.canonical_url)
    ).scalar()
    if hit is not None:
        return Skip(
            stage=Stage.DEDUPE,
            reason=SkipReason.DUPLICATE_URL,
            detail=f"same canonical URL as article #{hit}: {article.canonical_url}",
        )
    hit = conn.execute(
        select(articles.c.id).where(articles.c.text_sha256 == article.text_sha256)
    ).scalar()
    if hit is not None:
        return Skip(
            stage=Stage.DEDUPE,
            reason=SkipReason.DUPLICATE_TEXT,
            detail=f"same normalised text as article #{hit} (sha256 {article.text_sha256[:12]}…)",
        )
    return None


def find_story(conn: Connection, sig: np.ndarray) -> tuple[int, float] | None:
    """Signature → (story id, similarity) of the most similar stored article at/above threshold."""
    keys = band_keys(sig)
    candidates = (
        select(article_bands.c.article_id)
        .where(article_bands.c.band_key.in_(keys))
        .distinct()
        .scalar_subquery()
    )
    rows = conn.execute(
        select(articles.c.id, articles.c.story_id, articles.c.minhash).where(
            articles.c.id.in_(candidates), articles.c.minhash.is_not(None)
        )
    ).all()
    best: tuple[int, float] | None = None
    for _id, story_id, blob in rows:
        sim = similarity(sig.astype(np.uint64), _unpack(blob))
        if sim >= STORY_THRESHOLD and story_id is not None and (best is None or sim > best[1]):
            best = (story_id, sim)
    return best


def store_article(
    conn: Connection, article: Article, *, feed_id: int | None
) -> StoredArticle | Skip:
    """Article → inserted row in an existing or new story, or Skip(duplicate_url|duplicate_text)."""
    dup = find_duplicate(conn, article)
    if dup is not None:
        return dup
    sig = signature(article.text)
    match = find_story(conn, sig)
    try:
        # a savepoint: a concurrent worker may insert the same URL/text first (PostgreSQL)
        with conn.begin_nested():
            new_story = match is None
            if match is None:
                story_id = conn.execute(
                    insert(stories).values(created_at=utcnow())
                ).inserted_primary_key[0]
                sim = None
            else:
                story_id, sim = match
            article_id = conn.execute(
                insert(articles).values(
                    url=article.url,
                    canonical_url=article.canonical_url,
                    title=article.title,
                    author=article.author,
                    published=article.published,
                    site_name=article.site_name,
                    text=article.text,
                    text_sha256=article.text_sha256,
                    language=article.language,
                    extracted_from=article.extracted_from.value,
                    minhash=_pack(sig),
                    story_id=story_id,
                    feed_id=feed_id,
                    created_at=utcnow(),
                )
            ).inserted_primary_key[0]
            conn.execute(
                insert(article_bands),
                [{"article_id": article_id, "band_key": k} for k in band_keys(sig)],
            )
    except IntegrityError:
        dup = find_duplicate(conn, article)
        if dup is None:
            raise
        return dup
    return StoredArticle(
        article_id=article_id, story_id=story_id, new_story=new_story, similarity=sim
    )


def story_sizes(conn: Connection) -> dict[int, int]:
    """Connection → {story id: number of articles} for stories with any article."""
    rows = conn.execute(select(articles.c.story_id, func.count()).group_by(articles.c.story_id))
    return {sid: n for sid, n in rows if sid is not None}
