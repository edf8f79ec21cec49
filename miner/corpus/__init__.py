"""Corpus stage: raw documents -> sentence shards (`miner corpus prepare|fetch|info`), and reading shards back."""
