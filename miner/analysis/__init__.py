"""Step 3 (`miner analyze`, `miner compare`): clustering vs layers, unit maps, rankings, run comparison."""
