"""Step 2 (`miner signatures`, the README's "Abstract"): POS tags, per-unit signatures, vectors."""
