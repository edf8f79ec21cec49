"""Top-down probing (NeuroX method): per-word activations, concept labels and linear probes."""
