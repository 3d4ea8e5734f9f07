"""Test setup: 8 fake CPU devices for JAX (set before jax is imported anywhere)."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = Path(os.environ.get("DATALAWS_SHARED_DATA", SHARED / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The public measurements in ../shared/data (skip where absent)."""
    if not (SHARED_DATA / "chinchilla.csv").exists():
        pytest.skip(f"public data not found at {SHARED_DATA}")
    return SHARED_DATA
