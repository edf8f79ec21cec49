"""Correlation views over runs' score samples: redundant units within a run, matching units across runs."""
