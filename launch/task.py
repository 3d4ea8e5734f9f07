"""One array task: ``python -m datalaws.launch.task TASKS.json INDEX``.

Trains the INDEX-th run of TASKS.json (resuming from its checkpoint when there is one). On a
non-zero exit other than a preemption it leaves ``failed.json`` with the exit code, so
``datalaws status`` can say which run failed and how, and relaunches do not resubmit it
unless asked. Multi-node tasks first join the JAX distributed system from SLURM's env.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

from datalaws.exitcodes import EXIT_REQUEUE
from datalaws.records import atomic_write_text


def main(argv: list[str]) -> int:
    tasks_file, index = Path(argv[0]), int(argv[1])
    cfg = json.loads(tasks_file.read_text())[index]
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("SLURM_NNODES", "1")) > 1 or os.environ.get("DATALAWS_MULTIHOST"):
        import jax

        # coordinator, process count and id from SLURM's environment or the TPU slice
        jax.distributed.initialize()
    from datalaws.model.cli import run_from_dict

    try:
        code = run_from_dict(cfg)
    except Exception:
        traceback.print_exc()
        code = 1
    if code not in (0, EXIT_REQUEUE) and _is_process_zero():
        atomic_write_text(out / "failed.json", json.dumps({"exit_code": code}))
    return code


def _is_process_zero() -> bool:
    # multi-host: one failed.json per run, from process 0 (jax imported only if it ran)
    jax = sys.modules.get("jax")
    return jax is None or jax.process_index() == 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
