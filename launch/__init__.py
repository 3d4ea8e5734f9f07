"""datalaws.launch: sweeps (TOML grids with stable run ids) on local, SLURM and TPU
executors; every run is a `datalaws train` of one ``RunConfig``."""

import importlib

_EXPORTS = {
    "Run": "sweep", "expand": "sweep", "load_spec": "sweep", "plan_runs": "sweep",
    "run_local": "sweep", "run_state": "sweep", "status": "sweep",
    "SlurmProfile": "slurm", "TpuProfile": "tpu",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
