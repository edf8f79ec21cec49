"""Step 1 (`miner mine`): stream the corpus through the model and keep the exact top-N/bottom-N per unit."""
