"""Explanation scores: how far to trust what a unit's signature says (issue 16).

formulas: compositional explanations (Mu & Andreas 2020), a beam search over AND / OR / AND NOT formulas of
atomic concepts (words, POS tags, metadata values) for the sentence set that best matches a unit's top band.
scores: the signature simulator (log rel_freq of the items a sentence holds), its Pearson correlation with
the true held-out scores against a shuffled-signature baseline, and detection ROC AUC.
Import from the modules: this file imports nothing.
"""
