"""Step 3 (`miner analyze`, `miner compare`): clustering vs layers, unit maps, rankings, run comparison.

clustering (k-means scored by Hungarian matching, t-SNE maps) and rankings (per-layer rankings and their
five-number summaries) are pure; stage runs them on one run folder (`run_analysis`), compare sets runs side
by side (`compare_runs`, `write_comparison`), plots draws them. Import from those modules: this file
imports nothing, so loading one module of the package (e.g. plots, for `miner report`) loads no other.
"""
