"""Summaries of a prepared corpus: sentences, tokens, per-domain and per-label counts."""

from __future__ import annotations

from pathlib import Path

from miner.corpus.prepare import load_corpus


def corpus_summary(corpus_dir: Path) -> dict:
    """A JSON-ready summary of a prepared corpus (read from its manifest; shards are checked to exist)."""
    m = load_corpus(corpus_dir)
    return {
        "corpus": str(corpus_dir.resolve()),
        "sentences": m.sentences,
        "tokens": m.tokens,
        "mean_tokens": round(m.tokens / m.sentences, 2) if m.sentences else 0.0,
        "shards": len(m.shards),
        "domains": m.domains,
        "labels": m.labels,
        "dropped": m.dropped,
        "columns": m.columns,
        "fingerprint": m.fingerprint,
    }


def format_summary(summary: dict) -> str:
    """Render a summary as aligned plain text for the terminal."""
    lines = [
        f"corpus     {summary['corpus']}",
        f"sentences  {summary['sentences']:,}",
        f"tokens     {summary['tokens']:,}  (mean {summary['mean_tokens']} per sentence)",
        f"shards     {summary['shards']}",
        "domains:",
    ]
    total = summary["sentences"] or 1
    for name, n in sorted(summary["domains"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {name:<24} {n:>10,}  {100 * n / total:5.1f}%")
    for column, values in summary["labels"].items():
        if column in ("source",):
            continue
        lines.append(f"{column}:")
        for value, n in list(values.items())[:15]:
            lines.append(f"  {value[:24]:<24} {n:>10,}")
        if len(values) > 15:
            lines.append(f"  ... {len(values) - 15} more values")
    if summary["dropped"]:
        lines.append("dropped: " + ", ".join(f"{k}={v:,}" for k, v in summary["dropped"].items()))
    return "\n".join(lines)
