"""neuron-miner: find what each neuron of a language model responds to (Oba, Yoshinaga & Toyoda 2021).

Nothing may be fetched from a model hub at run time, so hub access is switched off before any
module of ours imports transformers.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
