"""SLURM executor: one ``sbatch --array`` per launch, idempotent relaunch, status from squeue.

``submit(runs, profile, sweep_dir)`` submits only the runs that are neither finished
(a record with status done/diverged) nor already queued or running (asked of ``squeue``),
and failed runs only with ``retry_failed``. Each array task runs ``python -m
datalaws.launch.task TASKS.json INDEX``, which trains its run (resuming from the run's
checkpoint if there is one) and, on a non-zero exit, leaves ``failed.json`` with the code.
``--requeue`` lets SLURM requeue preempted tasks; training saves on SIGTERM. Job states
come from squeue while the controller lists a job, then (after MinJobAge purges it) from
sacct or the job-completion log.
Multi-node tasks call ``jax.distributed.initialize()``, which reads SLURM's environment.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

from datalaws.launch.sweep import Run, run_state
from datalaws.records import atomic_write_text

__all__ = ["SlurmProfile", "sbatch_script", "submit", "queued_runs", "task_states",
           "SlurmError", "ALIVE"]


class SlurmError(RuntimeError):
    """sbatch or squeue failed; the message has their stderr."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SlurmProfile:
    """Resources of one array task, from the sweep spec's ``[slurm]`` table."""

    partition: str | None = None
    throttle: int = 8  # array tasks running at once (%N)
    cpus_per_task: int = 1
    gpus_per_task: int = 0
    nodes: int = 1  # > 1: multi-node tasks (jax.distributed.initialize)
    time: str | None = None  # e.g. "04:00:00"
    mem: str | None = None  # e.g. "16G"
    extra: tuple[str, ...] = ()  # more #SBATCH lines, verbatim
    setup: str = ""  # shell lines run before each task (module load, venv, ...)

    def __post_init__(self):
        if self.throttle < 1 or self.cpus_per_task < 1 or self.nodes < 1:
            raise ValueError(f"SlurmProfile: throttle={self.throttle}, cpus_per_task="
                             f"{self.cpus_per_task}, nodes={self.nodes} must be >= 1")


def sbatch_script(profile: SlurmProfile, tasks_file: Path, n_tasks: int, log_dir: Path,
                  job_name: str, compile_cache: Path | None = None) -> str:
    """The array job script (a pure function: tested as text)."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job_name}",
             f"#SBATCH --array=0-{n_tasks - 1}%{profile.throttle}",
             f"#SBATCH --output={log_dir}/%A_%a.out", "#SBATCH --requeue",
             f"#SBATCH --cpus-per-task={profile.cpus_per_task}",
             f"#SBATCH --nodes={profile.nodes}", "#SBATCH --ntasks-per-node=1"]
    if profile.partition:
        lines.append(f"#SBATCH --partition={profile.partition}")
    if profile.gpus_per_task:
        lines.append(f"#SBATCH --gpus-per-task={profile.gpus_per_task}")
    if profile.time:
        lines.append(f"#SBATCH --time={profile.time}")
    if profile.mem:
        lines.append(f"#SBATCH --mem={profile.mem}")
    lines += [f"#SBATCH {x}" for x in profile.extra]
    lines += ["set -u", profile.setup]
    if compile_cache is not None:
        lines += [f"export JAX_COMPILATION_CACHE_DIR={shlex.quote(str(compile_cache))}",
                  "export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0"]
    if profile.nodes > 1:  # one process per node; datalaws.launch.task joins them
        lines.append("export DATALAWS_MULTIHOST=1")
    launcher = "srun " if profile.nodes > 1 else "exec "
    lines.append(f"{launcher}{shlex.quote(sys.executable)} -m datalaws.launch.task "
                 f"{shlex.quote(str(tasks_file))} \"$SLURM_ARRAY_TASK_ID\"")
    return "\n".join(x for x in lines if x) + "\n"


def _run(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise SlurmError(f"{cmd[0]} not found: is SLURM installed on this machine?") from None
    if p.returncode != 0:
        raise SlurmError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr.strip()}")
    return p.stdout


def _submissions(sweep_dir: Path) -> list[dict]:
    f = sweep_dir / "slurm" / "submissions.json"
    return json.loads(f.read_text()) if f.exists() else []


ALIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING",
         "SUSPENDED", "REQUEUE_HOLD", "REQUEUE_FED", "SIGNALING", "STAGE_OUT")
_TASK = re.compile(r"(\d+)_(\d+)\|(\w+)")


def _squeue_states() -> dict[tuple[int, int], str]:
    """(job, task) -> state of this user's jobs the controller still lists. Not ``-j IDS``:
    squeue fails outright when one of them has been purged (MinJobAge)."""
    import getpass

    out = _run(["squeue", "-h", "-r", "-t", "all", "-u", getpass.getuser(), "-o", "%i|%T"])
    return {(int(m[1]), int(m[2])): m[3] for m in map(_TASK.match, out.split()) if m}


def _sacct_states(jobs: list[int]) -> dict[tuple[int, int], str]:
    """Final states of purged jobs from accounting (sacct); where the cluster keeps no
    accounting, from the job-completion log (JobCompType=jobcomp/filetxt); else nothing."""
    try:
        out = _run(["sacct", "-n", "-P", "-X", "-j", ",".join(map(str, jobs)),
                    "-o", "JobID,State"])
        found = {(int(m[1]), int(m[2])): m[3] for m in map(_TASK.match, out.split()) if m}
        if found:
            return found
    except SlurmError:
        pass  # no slurmdbd: "accounting storage is disabled"
    return _jobcomp_states(set(jobs))


def _jobcomp_states(jobs: set[int]) -> dict[tuple[int, int], str]:
    try:
        conf = _run(["scontrol", "show", "config"])
    except SlurmError:
        return {}
    m_type = re.search(r"^JobCompType\s*=\s*(\S+)", conf, re.M)
    m_loc = re.search(r"^JobCompLoc\s*=\s*(\S+)", conf, re.M)
    if not (m_type and m_loc and m_type[1].endswith("filetxt")) or not Path(m_loc[1]).is_file():
        return {}
    found = {}
    for line in Path(m_loc[1]).read_text(errors="replace").splitlines():
        f = dict(x.split("=", 1) for x in line.split() if "=" in x)
        try:
            job, task = int(f.get("ArrayJobId", f.get("JobId", -1))), int(f["ArrayTaskId"])
        except (KeyError, ValueError):
            continue
        if job in jobs:
            found[(job, task)] = f.get("JobState", "UNKNOWN")  # later lines: a requeued task
    return found


def task_states(sweep_dir: str | Path) -> dict[str, dict]:
    """run_id -> {job, task, state} for every submitted task SLURM knows about: squeue for
    jobs it still lists, sacct (or the completion log) for jobs it has already purged."""
    subs = _submissions(Path(sweep_dir))
    if not subs:
        return {}
    states = _squeue_states()
    listed = {j for j, _ in states}
    purged = sorted({int(s["job"]) for s in subs} - listed)
    if purged:
        states |= _sacct_states(purged)
    found = {}
    for s in subs:  # later submissions of a run override earlier ones
        for task, run_id in enumerate(s["runs"]):
            state = states.get((int(s["job"]), task))
            if state:
                found[run_id] = {"job": s["job"], "task": task, "state": state}
    return found


def queued_runs(sweep_dir: str | Path) -> dict[str, dict]:
    """run_id -> {job, task, state} for this sweep's tasks that SLURM lists as alive."""
    return {k: v for k, v in task_states(sweep_dir).items() if v["state"] in ALIVE}


def submit(runs: list[Run], profile: SlurmProfile, sweep_dir: str | Path, *,
           retry_failed: bool = False, compile_cache: str | Path | None = None) -> int | None:
    """Submit the runs that need it as one array job; returns its job id (None: nothing)."""
    sweep_dir = Path(sweep_dir)
    queued = queued_runs(sweep_dir)
    todo = []
    for r in runs:
        state = run_state(r)["state"]
        if r.run_id in queued or state in ("done", "diverged"):
            continue
        if state == "failed" and not retry_failed:
            continue
        todo.append(r)
    if not todo:
        return None
    slurm_dir = sweep_dir / "slurm"
    slurm_dir.mkdir(parents=True, exist_ok=True)
    n = len(_submissions(sweep_dir))
    tasks_file = slurm_dir / f"tasks_{n}.json"
    atomic_write_text(tasks_file, json.dumps([r.config for r in todo]))
    for r in todo:
        r.out.mkdir(parents=True, exist_ok=True)
        (r.out / "failed.json").unlink(missing_ok=True)
    script = sbatch_script(profile, tasks_file, len(todo), slurm_dir,
                           job_name=f"datalaws-{sweep_dir.name}",
                           compile_cache=Path(compile_cache) if compile_cache else None)
    script_file = slurm_dir / f"array_{n}.sbatch"
    atomic_write_text(script_file, script)
    out = _run(["sbatch", "--parsable", str(script_file)])
    job = int(out.strip().split(";")[0])
    subs = _submissions(sweep_dir) + [{"job": job, "runs": [r.run_id for r in todo],
                                       "tasks_file": str(tasks_file)}]
    atomic_write_text(slurm_dir / "submissions.json", json.dumps(subs, indent=1))
    return job
