"""`miner serve`: browse runs in a web browser (Starlette app over the report records and templates)."""
