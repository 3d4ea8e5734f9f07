"""TPU VM / multi-host: the commands that run a sweep's tasks on every host of a slice.

On a TPU slice each host runs the same program; ``jax.distributed.initialize()`` discovers
the slice by itself, so a task is one ``gcloud ... ssh --worker=all`` that starts
``python -m datalaws.launch.task TASKS.json INDEX`` on every worker, one run after another.
The script first copies the task list to every worker (``scp --worker=all``, same absolute
path as here). Every worker trains its share of the global batch; process 0 alone writes the
run's record and metrics (Orbax coordinates the checkpoint across hosts). Run directories
(``out``) must be on storage every worker sees (a shared or GCS-fuse mount).
The commands are generated as text (a shell script), to be run where gcloud is set up.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path

from datalaws.launch.sweep import Run, run_state
from datalaws.records import atomic_write_text

__all__ = ["TpuProfile", "tpu_script", "write_tpu_script"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class TpuProfile:
    """Where the slice is, from the sweep spec's ``[tpu]`` table."""

    name: str  # TPU VM name
    zone: str  # e.g. "us-central2-b"
    project: str | None = None
    workdir: str = "~/datalaws"  # checkout + .venv on every worker
    python: str = ".venv/bin/python"

    def __post_init__(self):
        if not self.name or not self.zone:
            raise ValueError("TpuProfile: name and zone are required")


def tpu_script(profile: TpuProfile, tasks_file: str, n_tasks: int) -> str:
    """A bash script copying the task list to all workers of the slice, then running each
    task on all of them, in order."""
    where = [f"--zone={profile.zone}", "--worker=all"]
    if profile.project:
        where.append(f"--project={profile.project}")
    base = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", profile.name, *where]
    q = shlex.quote(tasks_file)
    lines = ["#!/bin/bash", "set -euo pipefail",
             "# the task list, at the same path on every worker",
             " ".join(base) + " --command=" + shlex.quote(
                 f"mkdir -p {shlex.quote(str(Path(tasks_file).parent))}"),
             " ".join(["gcloud", "compute", "tpus", "tpu-vm", "scp", q,
                       f"{profile.name}:{q}", *where]),
             "# each task: every worker runs it; jax.distributed.initialize() finds the slice"]
    for i in range(n_tasks):
        remote = (f"cd {profile.workdir} && DATALAWS_MULTIHOST=1 {profile.python} -m "
                  f"datalaws.launch.task {shlex.quote(tasks_file)} {i}")
        lines.append(" ".join(base) + " --command=" + shlex.quote(remote))
    return "\n".join(lines) + "\n"


def write_tpu_script(runs: list[Run], profile: TpuProfile, sweep_dir: str | Path) -> Path:
    """Write tasks + script for the unfinished runs; returns the script's path."""
    sweep_dir = Path(sweep_dir)
    todo = [r for r in runs if run_state(r)["state"] not in ("done", "diverged")]
    tdir = sweep_dir / "tpu"
    tdir.mkdir(parents=True, exist_ok=True)
    tasks = tdir / "tasks.json"
    atomic_write_text(tasks, json.dumps([r.config for r in todo]))
    script = tdir / "run.sh"
    atomic_write_text(script, tpu_script(profile, str(tasks.absolute()), len(todo)))
    script.chmod(0o755)
    return script
