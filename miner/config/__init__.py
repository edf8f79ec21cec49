"""Domain records and validated configuration models, each field documented where it is declared.

The CLI derives its options from these models (field descriptions become --help), and the job file's
JSON schema in schemas/ is generated from them, so every option is declared exactly once. One module per
concern: base (StrictModel, validate_model), corpus (prepare options, corpus manifest), steps (steps 2 and 3),
probe (the probing stage), sample (the score sample), scores (explanation scores), ablate (interventions), job (the job file, loading, path resolution).
"""

from miner.config.ablate import AblateOptions
from miner.config.base import SHORT_NAMES, M, StrictModel, validate_model
from miner.config.corpus import (
    CorpusManifest,
    CorpusShard,
    InputFormat,
    PrepareOptions,
    RunOptions,
    corpus_manifest_path,
)
from miner.config.correlate import MatchOptions, RedundancyOptions
from miner.config.job import EarlyStop, JobSpec, Site, load_job, resolve_job_paths
from miner.config.probe import ConceptSpec, ProbingOptions
from miner.config.sample import SampleOptions
from miner.config.scores import ScoreOptions
from miner.config.steps import AnalysisOptions, AnnotateOptions, Direction, SignatureOptions, VectorOptions

__all__ = [
    "SHORT_NAMES", "AblateOptions", "AnalysisOptions", "AnnotateOptions", "ConceptSpec", "CorpusManifest", "CorpusShard", "Direction",
    "EarlyStop", "InputFormat", "JobSpec", "M", "MatchOptions", "PrepareOptions", "ProbingOptions", "RedundancyOptions", "RunOptions", "SampleOptions", "ScoreOptions", "SignatureOptions",
    "Site", "StrictModel", "VectorOptions", "corpus_manifest_path", "load_job", "resolve_job_paths", "validate_model",
]
