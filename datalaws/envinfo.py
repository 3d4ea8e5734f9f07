"""Versions of the stack and the JAX devices, for `datalaws env` and for run records."""

from __future__ import annotations

import importlib.metadata
import subprocess
from pathlib import Path

__all__ = ["package_versions", "git_sha", "describe_devices"]

PACKAGES = ("datalaws", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain",
            "tensorstore", "numpyro", "arviz", "numpy", "pandas", "tokenizers")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, cwd=Path(__file__).parent, timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def describe_devices() -> str:
    import jax

    devs = jax.devices()
    return f"{devs[0].device_kind} x{len(devs)} ({jax.default_backend()})"
