"""What a run directory allows before training starts, and what survives a kill.

- ``check_run_dir``: a finished run (it has a record) is never trained into again: its
  record would describe new settings while its weights are the old ones. A preempted run
  resumes only with the config its checkpoint was saved with; otherwise the error lists the
  differences. Both checks run before the model is built or compiled.
- ``truncate_metrics``: on resume, metrics.jsonl keeps the lines up to the restored step; a
  line half-written when the process was killed (SIGKILL mid-write) is dropped.
- ``previous_wall_time``: seconds the run had trained before this invocation, so that the
  record's wall_time covers every invocation (up to the restored checkpoint).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from datalaws.io import atomic_write_text, read_jsonl

__all__ = ["RunFinishedError", "check_run_dir", "config_diff", "truncate_metrics",
           "previous_wall_time", "RESUME_FREE"]

# settings that do not change the trajectory: a resume may change them
RESUME_FREE = frozenset({"keep", "loader_workers", "save_every", "log_every"})


class RunFinishedError(ValueError):
    """The run directory holds a finished run; the message names its record."""


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out |= _flat(v, f"{prefix}{k}.")
        return out
    return {prefix[:-1]: d}


def config_diff(saved: dict, now: dict) -> list[str]:
    """``["lr: 0.003 -> 0.01", ...]``: settings that differ (JSON-normalised, so tuples and
    lists compare equal), leaving out those a resume may change. A setting known to only one
    side comes from another datalaws version (a field added with its default), not from the
    user: the model check at restore still refuses a model that differs."""
    a = _flat(json.loads(json.dumps(saved, default=str)))
    b = _flat(json.loads(json.dumps(now, default=str)))
    def schema(k: str) -> bool:  # a field of TrainConfig / ModelConfig, not a dict's entry
        return "." not in k or k.startswith("model.")

    keys = sorted(k for k in set(a) | set(b) if k.split(".")[0] not in RESUME_FREE
                  and ((k in a and k in b) or not schema(k)))
    return [f"{k}: {a.get(k, '(unset)')} -> {b.get(k, '(unset)')}" for k in keys
            if a.get(k) != b.get(k)]


def check_run_dir(run_dir: Path, now: dict, saved_meta) -> None:
    """Refuse a finished run, or a resume with another config. ``saved_meta()`` returns the
    latest checkpoint's metadata ({"train": config, "step": ...}) or None without one."""
    from datalaws.model.train import CheckpointError

    records = sorted(run_dir.glob("*.record.json"))
    if records:
        try:
            status = json.loads(records[0].read_text()).get("status", "?")
        except (OSError, ValueError):
            status = "unreadable"
        raise RunFinishedError(f"{run_dir}: holds a finished run ({records[0].name}, status "
                               f"{status}); train into a new --out")
    meta = saved_meta()
    if not meta or "train" not in meta:
        return
    diff = config_diff(meta["train"], now)
    if diff:
        what = "model" if any(d.startswith("model.") for d in diff) else "config"
        raise CheckpointError(f"{run_dir}/checkpoints/{meta.get('step')}: checkpoint is of a "
                              f"different {what}; a preempted run resumes only with the "
                              f"same config ({'; '.join(diff[:6])}"
                              f"{' ...' if len(diff) > 6 else ''}); or use a new --out")


def truncate_metrics(path: Path, step: int) -> None:
    """Keep metrics.jsonl lines up to ``step``; drop a torn last line."""
    if not path.exists():
        return
    keep = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def previous_wall_time(meta: dict | None) -> float:
    return float((meta or {}).get("wall_time", 0.0))
