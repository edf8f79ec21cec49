"""The causal and cross-model sections of the reports: redundancy, matches in other runs, output tokens, ablation."""
