"""Ten useful questions to ask a run's catalog, as SQL (shared by the README and benchmarks/queries.py).

Each query names the catalog views it reads, so a tool can skip it on a run that lacks one (tokens,
signatures, unit_stats and unit_metadata exist only after the signatures step). Unit 1000 stands for
"the unit you are looking at"; change the literal.
"""

from __future__ import annotations

from typing import NamedTuple


class NamedQuery(NamedTuple):
    """A titled example query."""

    title: str
    """What the query answers, one line."""
    sql: str
    """The SQL, runnable with `miner sql RUN "<sql>"`."""
    tables: tuple[str, ...]
    """Catalog views it reads."""


QUERIES: list[NamedQuery] = [
    NamedQuery(
        "Units whose top sentences are at least 80% one domain",
        """SELECT m.unit_id, u.layer, u.idx, m.value AS domain, round(m.share, 3) AS share, m.count
FROM unit_metadata m JOIN units u USING (unit_id)
WHERE m.direction = 'top' AND m.field = 'domain' AND m.share >= 0.8
ORDER BY m.share DESC, m.unit_id
LIMIT 20""",
        ("unit_metadata", "units"),
    ),
    NamedQuery(
        "The three most noun-selective units of each layer",
        """SELECT u.layer, s.unit_id, u.idx, round(s.noun_ratio, 3) AS noun_ratio, round(s.noun_rel, 2) AS noun_rel
FROM unit_stats s JOIN units u USING (unit_id)
WHERE s.direction = 'top'
QUALIFY row_number() OVER (PARTITION BY u.layer ORDER BY s.noun_rel DESC, s.unit_id) <= 3
ORDER BY u.layer, s.noun_rel DESC""",
        ("unit_stats", "units"),
    ),
    NamedQuery(
        "The top sentences of one unit with their peak tokens",
        """SELECT rank, round(score, 4) AS score, peak_token, round(peak_score, 3) AS peak_score, domain, text
FROM unit_top
WHERE unit_id = 1000 AND direction = 'top'
ORDER BY rank
LIMIT 20""",
        ("unit_top",),
    ),
    NamedQuery(
        "The unit with the highest share of tweets among its top sentences, per layer",
        """SELECT u.layer, m.unit_id, u.idx, round(m.share, 3) AS tweet_share, m.count AS tweets
FROM unit_metadata m JOIN units u USING (unit_id)
WHERE m.direction = 'top' AND m.field = 'domain' AND m.value = 'social_media'
QUALIFY row_number() OVER (PARTITION BY u.layer ORDER BY m.share DESC, m.unit_id) = 1
ORDER BY u.layer""",
        ("unit_metadata", "units"),
    ),
    NamedQuery(
        "The most positive units (share of positive sentences in the top queue)",
        """SELECT m.unit_id, u.layer, u.idx, round(m.share, 3) AS positive_share, round(m.rel_share, 2) AS vs_corpus
FROM unit_metadata m JOIN units u USING (unit_id)
WHERE m.direction = 'top' AND m.field = 'sentiment' AND m.value = 'positive'
ORDER BY m.share DESC, m.unit_id
LIMIT 20""",
        ("unit_metadata", "units"),
    ),
    NamedQuery(
        "The word signature of one unit: its most characteristic words",
        """SELECT rank, pattern AS word, support, background_support, round(rel_freq, 2) AS rel_freq
FROM signatures
WHERE unit_id = 1000 AND direction = 'top' AND kind = 'word'
ORDER BY rank
LIMIT 20""",
        ("signatures",),
    ),
    NamedQuery(
        "Convergence: how many queue entries changed per block of sentences",
        """SELECT direction, block, sentences_seen, updates, round(update_rate, 4) AS update_rate
FROM convergence
WHERE site = 'all'
ORDER BY direction, block""",
        ("convergence",),
    ),
    NamedQuery(
        "Units with the shortest average sentences",
        """SELECT s.unit_id, u.layer, u.idx, round(s.avg_length, 1) AS avg_length, t.text AS typical_sentence
FROM unit_stats s JOIN units u USING (unit_id) LEFT JOIN sentences t ON t.sentence_id = s.typical_sentence_id
WHERE s.direction = 'top'
ORDER BY s.avg_length, s.unit_id
LIMIT 20""",
        ("unit_stats", "units", "sentences"),
    ),
    NamedQuery(
        "Units sharing a word pattern: the pattern in most units' top-10 patterns, and those units",
        """WITH shared AS (
  SELECT pattern, count(*) AS units
  FROM signatures
  WHERE kind = 'word_pattern' AND direction = 'top' AND rank <= 10
  GROUP BY pattern
  ORDER BY units DESC, pattern
  LIMIT 1)
SELECT s.pattern, s.unit_id, u.layer, u.idx, s.rank, round(s.rel_freq, 2) AS rel_freq
FROM signatures s JOIN shared USING (pattern) JOIN units u USING (unit_id)
WHERE s.kind = 'word_pattern' AND s.direction = 'top' AND s.rank <= 10
ORDER BY s.rel_freq DESC, s.unit_id""",
        ("signatures", "units"),
    ),
    NamedQuery(
        "The tokens one unit peaks on most often in its top sentences",
        """SELECT peak_token, count(*) AS sentences, round(avg(peak_score), 3) AS mean_peak_score,
       min(rank) AS best_rank
FROM top_sentences
WHERE unit_id = 1000 AND direction = 'top'
GROUP BY peak_token
ORDER BY sentences DESC, best_rank
LIMIT 20""",
        ("top_sentences",),
    ),
]


def queries_markdown(queries: list[NamedQuery] | None = None) -> str:
    """The queries as a numbered Markdown list with SQL blocks, for the README.

    Example: [NamedQuery("Units per layer", "SELECT ...", ("units",))] -> a "1. **Units per layer**" line,
    a blank line, then the SQL indented by three spaces between ```sql and ``` fences.
    """
    parts = []
    for number, query in enumerate(queries if queries is not None else QUERIES, 1):
        body = "\n".join("   " + line for line in ["```sql", *query.sql.splitlines(), "```"])
        parts.append(f"{number}. **{query.title}**\n\n{body}\n")
    return "\n".join(parts)
