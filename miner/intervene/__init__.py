"""Interventions inside the forward pass: ablation, steering, the output view."""
