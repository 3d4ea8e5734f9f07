"""Fit commands keep JAX on the CPU unless told otherwise (a law's NUTS steps are too small
for a GPU: 4x slower there, see datalaws/cli.py); training commands are left alone."""

import os
import subprocess
import sys

# what the command left in the environment, then the backend JAX chose after it
SCRIPT = """
import os, sys
from datalaws.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print("PLATFORMS", os.environ.get("JAX_PLATFORMS"), flush=True)
if os.environ.get("JAX_PLATFORMS") in (None, "cpu"):
    import jax
    print("BACKEND", jax.default_backend(), jax.local_device_count())
"""


def _run(*args: str, **env: str) -> dict[str, list[str]]:
    e = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")} | env
    out = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=e, capture_output=True,
                         text=True, timeout=300)
    got = {ln.split()[0]: ln.split()[1:] for ln in out.stdout.splitlines()
           if ln.split()[:1] in (["PLATFORMS"], ["BACKEND"])}
    assert "PLATFORMS" in got, out.stderr[-2000:]
    return got


def test_fit_commands_pin_the_cpu_with_a_device_per_chain():
    for cmd in ("fit", "predict", "compare"):
        got = _run(cmd, "--help")
        assert got["PLATFORMS"] == ["cpu"] and got["BACKEND"] == ["cpu", "4"], (cmd, got)


def test_training_and_what_the_user_chose_are_left_alone():
    assert _run("train", "--help")["PLATFORMS"] == ["None"]
    got = _run("fit", "--help", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert got["BACKEND"] == ["cpu", "2"], got
    # a platform the user set wins (only the choice: this machine may have no such device)
    out = subprocess.run(
        [sys.executable, "-c", "import os; from datalaws.cli import _fits_on_the_cpu; "
         "_fits_on_the_cpu(); print(os.environ['JAX_PLATFORMS'])"],
        env=os.environ | {"JAX_PLATFORMS": "cuda"}, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "cuda", out.stderr[-2000:]
