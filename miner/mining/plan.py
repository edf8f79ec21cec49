"""How a run is cut into blocks: fixed, contiguous slices of corpus shards, the same for any number of workers."""

from __future__ import annotations

from dataclasses import dataclass

from miner.config import CorpusManifest


@dataclass(frozen=True)
class BlockPlan:
    """A contiguous slice of one corpus shard: the unit of scheduling, checkpointing and convergence."""

    index: int
    shard: str
    row_start: int
    rows: int
    first_id: int


def auto_block_size(total: int) -> int:
    """Default block size: about 20 blocks, between 1,000 and 100,000 sentences (deterministic).

    Example: 20,000 sentences -> 1,000; 1,000,000 -> 50,000; 10,000,000 -> 100,000.
    """
    return int(min(100_000, max(1_000, -(-total // 20))))


def plan_blocks(manifest: CorpusManifest, block_size: int | None, max_sentences: int | None) -> list[BlockPlan]:
    """Cut the corpus into blocks that never cross a shard boundary.

    Example: shards of 300 and 200 sentences, block_size 250 -> blocks (shard 0: rows 0-249, 250-299), (shard 1:
    rows 0-199); max_sentences 400 -> the last block has 100 rows.
    """
    total = manifest.sentences if max_sentences is None else min(manifest.sentences, max_sentences)
    size = block_size or auto_block_size(total)
    plans: list[BlockPlan] = []
    remaining = total
    for shard in manifest.shards:
        for start in range(0, shard.sentences, size):
            if remaining <= 0:
                return plans
            rows = min(size, shard.sentences - start, remaining)
            plans.append(BlockPlan(len(plans), shard.file, start, rows, shard.first_id + start))
            remaining -= rows
    return plans
