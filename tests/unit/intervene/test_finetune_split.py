"""Labelled held-out sentences of `miner ablate` must use the split a checkpoint was fine-tuned with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from miner.config import AblateOptions
from miner.errors import ConfigError
from miner.intervene.stage import FINETUNE_RECORD, check_finetune_split


def _options(**held_out: object) -> AblateOptions:
    return AblateOptions.model_validate({"sets": [{"name": "s", "units": [0]}],
                                         "held_out": {"label_field": "sentiment", **held_out}})


def test_the_fine_tuning_split_is_required(tmp_path: Path) -> None:
    (tmp_path / FINETUNE_RECORD).write_text(json.dumps({"split": {"seed": 3, "dev_share": 0.1, "test_share": 0.2}}))
    check_finetune_split(tmp_path, _options(split_seed=3))  # the same split: fine
    with pytest.raises(ConfigError, match=r"ablate.held_out: .*0/0.1/0.2 differ .*\(3/0.1/0.2"):
        check_finetune_split(tmp_path, _options())
    check_finetune_split(tmp_path, AblateOptions.model_validate({"sets": [{"name": "s", "units": [0]}]}))  # no labelled held-out sentences: nothing to check
    check_finetune_split(tmp_path / "elsewhere", _options())  # no record: nothing to check
    (tmp_path / FINETUNE_RECORD).write_text("{not json")
    with pytest.raises(ConfigError, match="not a valid fine-tuning record"):
        check_finetune_split(tmp_path, _options(split_seed=3))
