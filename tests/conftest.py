"""Test setup: 8 fake CPU devices for JAX (set before jax is imported anywhere).

``DATALAWS_REQUIRE=slurm,browser,shared-data`` (set by .ci/run) turns a skip of a test that
needs one of those (marks ``slurm`` / ``browser``, the ``shared_data`` fixture) into a
failure: in CI a missing prerequisite must not pass as green. Locally skips stay allowed.
"""

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


REQUIRE = {x.strip() for x in os.environ.get("DATALAWS_REQUIRE", "").split(",") if x.strip()}
KNOWN_REQUIREMENTS = {"slurm", "browser", "shared-data"}


def _needs(item: pytest.Item) -> set[str]:
    needs = {m.name for m in item.iter_markers()} & {"slurm", "browser"}
    if "shared_data" in getattr(item, "fixturenames", ()):
        needs.add("shared-data")
    return needs


def pytest_configure(config: pytest.Config) -> None:
    unknown = REQUIRE - KNOWN_REQUIREMENTS
    if unknown:
        raise pytest.UsageError(f"DATALAWS_REQUIRE: unknown {sorted(unknown)}; known: "
                                f"{sorted(KNOWN_REQUIREMENTS)}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    rep = outcome.get_result()
    if not (rep.skipped and REQUIRE):
        return
    needs = _needs(item) & REQUIRE
    if needs:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (f"DATALAWS_REQUIRE={','.join(sorted(REQUIRE))}: this test needs "
                        f"{', '.join(sorted(needs))} but was skipped: {reason}")
