"""Explanation scores: how far to trust what a unit's signature says (issue 16).

formulas: compositional explanations (Mu & Andreas 2020), a beam search over AND / OR / AND NOT formulas of
atomic concepts (words, POS tags, metadata values) for the sentence set that best matches a unit's top band.
Import from the modules: this file imports nothing.
"""
