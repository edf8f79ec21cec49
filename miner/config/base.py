"""The base of every configuration model, and the one place a pydantic error becomes a one-line ConfigError."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from miner.errors import ConfigError

# Job `model` values that name the bundled model rather than a folder.
SHORT_NAMES = frozenset({"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"})
M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for configuration: unknown keys are errors, values are validated on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def validate_model(model: type[M], values: dict, what: str = "field") -> M:
    """Validate `values` into `model`, turning the first pydantic error into a ConfigError naming the field.

    Example: validate_model(RunOptions, {"workers": 0}) -> ConfigError("field 'workers': Input should be
    greater than or equal to 1")
    """
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or model.__name__
        raise ConfigError(f"{what} '{loc}': {err['msg']}") from None
