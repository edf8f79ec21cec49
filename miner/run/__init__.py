"""The run folder, every stage's shared contract: its files, its manifest, and its DuckDB catalog."""
