"""Read-only SQL over a run's catalog (`miner sql`), concept search (`miner concepts`), example queries.

sql holds the entry points (run_query, query_arrow); guard checks the statements, sandbox runs them in a
locked-down DuckDB, formats renders the results; concepts and examples build on them.
"""
