"""Read-only SQL over a run's catalog (`miner sql`), concept search (`miner concepts`), example queries."""
