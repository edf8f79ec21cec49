"""Ray plumbing: connecting to a cluster, submitting jobs, fanning work out over chunks.

With the mining executor, the only place `ray` is imported.
"""
