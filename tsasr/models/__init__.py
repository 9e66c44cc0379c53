"""Flax acoustic models: features and paddings in, senone logits and paddings out.

Models compute logits only; losses live in tsasr.losses. Every model is called as
`model.apply(variables, features, paddings, train=...)` with features
[batch, frames, dim] and paddings [batch, frames] (1.0 = pad), and returns
(logits [batch, frames', senones], paddings [batch, frames']) where
frames' = ceil(frames / subsampling).
"""

import dataclasses
from collections.abc import Mapping

from tsasr.models.conformer import Conformer, ConformerConfig
from tsasr.models.lstm import Lstm, LstmConfig
from tsasr.models.subsampling import stack_frames, subsample_targets, subsampled_length
from tsasr.models.tdnn import Tdnn, TdnnConfig

MODELS = {
    "lstm": (Lstm, LstmConfig),
    "tdnn": (Tdnn, TdnnConfig),
    "conformer": (Conformer, ConformerConfig),
}


def model_config(config):
    """The frozen dataclass config of a model from a mapping with `name` and sizes.

    Raises ValueError naming the model and field on an unknown name or field.
    """
    fields = dict(config.to_dict() if hasattr(config, "to_dict") else config)
    if not isinstance(fields, Mapping) or "name" not in fields:
        raise ValueError(f"model config needs a `name` among {sorted(MODELS)}: {fields}")
    name = fields.pop("name")
    if name not in MODELS:
        raise ValueError(f"unknown model name {name!r}; known: {sorted(MODELS)}")
    config_class = MODELS[name][1]
    known = {f.name for f in dataclasses.fields(config_class)}
    for field in fields:
        if field not in known:
            raise ValueError(f"unknown field {field!r} in the config of model {name!r}; known fields: {sorted(known)}")
    for field, value in fields.items():
        if isinstance(value, list):  # ConfigDicts turn tuples into lists.
            fields[field] = tuple(value)
    return config_class(**fields)


def build_model(config):
    """The Flax module for config.name in ('lstm', 'tdnn', 'conformer') with its sizes."""
    config = model_config(config)
    module_class = next(m for m, c in MODELS.values() if isinstance(config, c))
    return module_class(config)
