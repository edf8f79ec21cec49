"""Neuron reports (`miner report`): records built from the catalog, rendered as HTML, Markdown and JSON."""
