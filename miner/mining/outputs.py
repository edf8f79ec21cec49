"""The tables a finished mining run writes: units, top_sentences (with peak tokens), sentences, convergence,
unit_moments, unit_distribution and unit_histograms."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from miner.config import CorpusManifest, JobSpec
from miner.corpus.store import read_rows
from miner.mining.batches import tokenize_sentences
from miner.mining.checkpoint import MiningState
from miner.mining.sketch import distribution_table, histogram_table
from miner.mining.topn import decode_queue_keys, unpack_payload
from miner.model.layout import UnitLayout, model_max_length
from miner.run.folder import FILES, RunFolder, table_name

log = logging.getLogger(__name__)


def run_stats(c: dict) -> dict:
    """The manifest's "stats" from the loop's counters."""
    computed = c["computed_tokens"]
    return {"sentences": int(c["sentences"]), "real_tokens": int(c["real_tokens"]),
            "attended_tokens": int(c["attended_tokens"]), "computed_tokens": int(computed),
            "truncated": int(c["truncated"]),
            "skipped_sentences": int(c.get("skipped_sentences", 0)),
            "batches": int(c.get("batches", 0)),
            # batches scored by the compiled kernel (miner.mining.native); the rest by torch (scores agree to rounding)
            "kernel_batches": int(c.get("kernel_batches", 0)),
            # batches of the sync-free loop (the default on CUDA; BlockMiner.sync_free)
            "sync_free_batches": int(c.get("sync_free_batches", 0)),
            "padding_efficiency": round(c["attended_tokens"] / computed, 4) if computed else None,
            "scored_token_share": round(c["real_tokens"] / computed, 4) if computed else None}


def units_table(layout: UnitLayout) -> pa.Table:
    """One row per unit: unit_id, site, layer, idx (its dimension in the mined tensor)."""
    unit_rows: dict[str, list] = {"unit_id": [], "site": [], "layer": [], "idx": []}
    for part in layout.slices():
        unit_rows["unit_id"].extend(range(part.lo, part.hi))
        unit_rows["site"].extend([part.site] * (part.hi - part.lo))
        unit_rows["layer"].extend([part.layer] * (part.hi - part.lo))
        unit_rows["idx"].extend(range(part.hi - part.lo))
    return pa.table({
        "unit_id": pa.array(unit_rows["unit_id"], pa.int32()), "site": pa.array(unit_rows["site"]),
        "layer": pa.array(unit_rows["layer"], pa.int16()), "idx": pa.array(unit_rows["idx"], pa.int32())})


def queue_table(state: MiningState) -> pa.Table:
    """Every queue entry, best first per unit and direction (no peak_token yet)."""
    parts = []
    for d, q in state.queues.items():
        units, ranks, keys, payload = q.sorted_entries()
        scores, ids = decode_queue_keys(keys, bottom=d == "bottom")
        peak_val, peak_pos = unpack_payload(payload)
        parts.append(pa.table({
            "unit_id": pa.array(units.numpy().astype(np.int32)), "direction": pa.array([d] * len(units)),
            "rank": pa.array(ranks.numpy().astype(np.int32)), "sentence_id": pa.array(ids.numpy()),
            "score": pa.array(scores.numpy()), "peak_position": pa.array(peak_pos.numpy().astype(np.int32)),
            "peak_score": pa.array(peak_val.numpy())}))
    return pa.concat_tables(parts)


def write_outputs(run: RunFolder, job: JobSpec, layout: UnitLayout, state: MiningState, corpus_dir: Path,
                  corpus: CorpusManifest, tokenizer: Any, tokenizer_config: object) -> dict:
    """Write units, top_sentences, sentences, convergence and unit_moments tables; returns manifest fields."""
    run.write_table(run.file(FILES.units), units_table(layout))
    top = queue_table(state)
    used = np.unique(top["sentence_id"].to_numpy())
    sentences = read_rows(corpus_dir, corpus, used).combine_chunks()  # one chunk: the same Parquet pages as ever
    max_len = min(job.max_length, model_max_length(tokenizer_config))
    n_model, truncated, peak_tokens = _peak_tokens(tokenizer, sentences, top, max_len)
    sentences = sentences.append_column("n_model_tokens", pa.array(n_model, pa.int32()))
    sentences = sentences.append_column("truncated", pa.array(truncated))
    top = top.add_column(top.schema.get_field_index("peak_score"), "peak_token", pa.array(peak_tokens, pa.string()))
    run.write_table(run.file(FILES.top_sentences), top)
    run.write_table(run.file(FILES.sentences), sentences)
    conv = pa.Table.from_pylist(state.convergence) if state.convergence else pa.table({"block": pa.array([], pa.int64())})
    run.write_table(run.file(FILES.convergence), conv)
    assert state.moments is not None
    run.write_table(run.file(FILES.unit_moments), state.moments.table())
    tables = [table_name(f) for f in (FILES.units, FILES.top_sentences, FILES.sentences, FILES.convergence,
                                      FILES.unit_moments)]
    hist = state.moments.hist
    if hist is not None:
        kept = {d: np.bincount(top["unit_id"].to_numpy()[top["direction"].to_numpy(zero_copy_only=False) == d],
                               minlength=layout.n_units) for d in ("top", "bottom")}
        run.write_table(run.file(FILES.unit_distribution),
                        distribution_table(hist, kept["top"], kept["bottom"] if job.bottom else None))
        run.write_table(run.file(FILES.unit_histograms), histogram_table(hist))
        tables += [table_name(FILES.unit_distribution), table_name(FILES.unit_histograms)]
    else:
        log.warning("no unit_distribution: this run's first blocks were mined by a version that kept no score "
                    "histograms; mine the run again (a new output folder) to get them")
    return {"tables": tables, "units": layout.n_units, "distinct_sentences": int(len(used))}


def _peak_tokens(tokenizer: Any, sentences: pa.Table, top: pa.Table, max_len: int,
                 chunk: int = 20_000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_model_tokens, truncated) per sentence and the peak token's text per queue entry.

    Sentences (sorted by id) are re-tokenised exactly as the miner saw them, a chunk at a time, so memory
    stays bounded by the chunk rather than the number of distinct queue sentences.
    """
    vocab = np.array(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer)))), dtype=object)
    ids = sentences["sentence_id"].to_numpy()
    sid = top["sentence_id"].to_numpy()
    pos = top["peak_position"].to_numpy().astype(np.int64)
    order = np.argsort(sid, kind="stable")
    sid_sorted = sid[order]
    n_model = np.zeros(len(ids), dtype=np.int32)
    truncated = np.zeros(len(ids), dtype=bool)
    peak = np.full(len(sid), None, dtype=object)
    for lo in range(0, len(ids), chunk):
        texts = sentences["text"].slice(lo, chunk).to_pylist()
        rows, _special, long_rows = tokenize_sentences(tokenizer, texts, max_len)
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        n_model[lo : lo + len(rows)] = lengths
        truncated[lo + np.asarray(long_rows, dtype=np.int64)] = True
        padded = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)
        for k, r in enumerate(rows):
            padded[k, : len(r)] = r
        first = np.searchsorted(sid_sorted, ids[lo], side="left")
        last = np.searchsorted(sid_sorted, ids[lo + len(rows) - 1], side="right")
        entries = order[first:last]
        local = np.searchsorted(ids[lo : lo + len(rows)], sid[entries])
        p = pos[entries]
        ok = p < lengths[local]
        peak[entries[ok]] = vocab[padded[local[ok], p[ok]]]
    return n_model, truncated, peak
