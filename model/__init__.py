"""datalaws.model: Flax NNX transformers trained from one ``RunConfig``.

``RunConfig`` (``config``) is a run's whole configuration; ``datalaws.model.run.train``
trains it (the one entry of `datalaws train`, sweeps and the demo). Names load on first
use (jax is heavy). Submodules share names with functions (``train``, ``generate``): import
those from their modules.
"""

import importlib

_EXPORTS = {
    "ConfigError": "config", "RunConfig": "config", "TrainConfig": "train",
    "CheckpointError": "train", "ModelConfig": "transformer", "PRESETS": "transformer",
    "Transformer": "transformer", "count_params": "transformer",
    "flops_per_token": "flops", "load_model": "score", "ModelSampler": "generate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
