"""Run metrics where the field's tools read them, where the time goes, and profiles on demand.

``RunLogger`` is the training loop's one logging object. Each step it appends a line to
``metrics.jsonl``; every ``log_every`` steps it also writes TensorBoard event files beside
that file (and to W&B in offline mode when asked), splits the interval's wall time into
waiting for data, the step itself, validation and checkpointing (``TIME_PARTS``; the rest is
the loop's own bookkeeping), prints the progress line, and warns when data wait exceeds
``DATA_WAIT_WARN`` of the step time. Only process 0 writes or prints.

TensorBoard events are written with tensorboardX, as MaxText and levanter do: a small
pure-Python writer (numpy, protobuf) with a background thread, unlike ``clu.metric_writers``
and ``flax.metrics.tensorboard``, whose TensorBoard writers need TensorFlow (or torch).
The ``tensorboard`` package (no TensorFlow either) is only needed to view or read them.

``ProfileWindow`` writes a JAX profiler trace (TensorBoard's profile plugin layout plus a
Perfetto ``perfetto_trace.json.gz``) for a window of steps, each marked with a
``StepTraceAnnotation("train", step_num=n)``.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import jax

from datalaws.io import dumps_json

__all__ = ["RunLogger", "ProfileWindow", "parse_profile_steps", "require_wandb",
           "DATA_WAIT_WARN", "TIME_PARTS"]

DATA_WAIT_WARN = 0.05  # share of step time spent waiting for data that earns a warning
TIME_PARTS = ("data", "step", "eval", "ckpt")  # the timed parts of an interval


def parse_profile_steps(text: str | tuple[int, int] | None) -> tuple[int, int] | None:
    """``"20:25"`` -> (20, 25): steps 20 to 25 inclusive, numbered as in metrics.jsonl."""
    if text is None:
        return None
    parts = list(text) if isinstance(text, (list, tuple)) else str(text).split(":")
    try:
        first, last = (int(p) for p in parts)
    except (ValueError, TypeError):
        raise ValueError(f"--profile-steps {text!r}: use FIRST:LAST, e.g. 20:25") from None
    if not 1 <= first <= last:
        raise ValueError(f"--profile-steps {text!r}: need 1 <= FIRST <= LAST")
    return first, last


def _is_writer() -> bool:
    # multi-host: every process trains, process 0 alone writes metrics and profiles
    return jax.process_index() == 0


class RunLogger:
    """metrics.jsonl + TensorBoard (+ offline W&B), time split and progress line of one run.

    ``start`` is the step a resumed run restarts from: TensorBoard drops the events of
    earlier sessions at steps past it (``purge_step``), as metrics.jsonl is truncated there.
    The first step of a session compiles, so rates and the time split start after it.
    """

    def __init__(self, run_dir: str | Path, *, run_id: str, steps: int, tokens_per_step: int,
                 flops_per_token: float, peak_flops: float, log_every: int = 10,
                 start: int = 0, config: Mapping | None = None, wandb: bool = False,
                 progress: bool = True, clock: Callable[[], float] = time.perf_counter):
        if log_every < 1:
            raise ValueError(f"log_every={log_every} must be >= 1")
        self.run_dir, self.run_id, self.steps = Path(run_dir), run_id, steps
        self.tokens_per_step, self.fpt, self.peak = tokens_per_step, flops_per_token, peak_flops
        self.log_every, self.start, self._clock = log_every, start, clock
        self.active = _is_writer()
        self.progress = progress and self.active
        from datalaws.progress import Progress

        # one redrawn line on a terminal; in a log (train.log, SLURM) a line per 10% or 30 s
        self._bar = Progress(steps, f"[{run_id}] step", enabled=self.progress)
        self._jsonl = self._tb = self._wandb = None
        self._parts = dict.fromkeys(TIME_PARTS, 0.0)
        self._t_interval = self._t_rate = clock()
        self._n_interval = self._tokens = 0
        self._slow_data = [0, 0]  # intervals over the data-wait threshold, intervals seen
        if not self.active:
            return
        if wandb:  # checked first: a missing optional package must not leave files behind
            require_wandb()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if wandb:
            self._wandb = _open_wandb(self.run_dir, run_id, config or {})
        self._jsonl = open(self.run_dir / "metrics.jsonl", "a")
        from tensorboardX import SummaryWriter

        # a deep queue: the default (10) blocks the loop while the writer thread drains it
        self._tb = SummaryWriter(str(self.run_dir), purge_step=start or None, flush_secs=30,
                                 max_queue=1000)
        if config and not start:  # run dirs are named by hash: say what the run is
            self._tb.add_text("config", "```\n" + dumps_json(dict(config), indent=1) + "\n```")

    @contextlib.contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Adds the time spent in the block to ``part`` (one of TIME_PARTS) of this interval."""
        t = self._clock()
        try:
            yield
        finally:
            self._parts[part] += self._clock() - t

    def step(self, step: int, *, loss: float, grad_norm: float, lr: float,
             extra: Mapping | None = None) -> dict:
        """Log one finished step (``extra``: more fields of its row, e.g. a validation-curve
        point); returns the metrics.jsonl row."""
        now = self._clock()
        if step == self.start + 1:  # compilation step: rates and split start after it
            self._reset_interval(now)
            self._t_rate, self._tokens = now, 0
        else:
            self._tokens += self.tokens_per_step
            self._n_interval += 1
        dt = now - self._t_rate
        tps = self._tokens / dt if dt > 0 else 0.0
        row = {"step": step, "loss": loss, "grad_norm": grad_norm, "lr": lr,
               "tokens_per_s": tps, "mfu": tps * self.fpt / self.peak} | dict(extra or {})
        if (step % self.log_every == 0 or step == self.steps) and self._n_interval:
            row |= self._split(now)
            self._interval(step, row)
        if self._jsonl is not None:
            self._jsonl.write(_json_line(row))
        return row

    def eval(self, step: int, losses: Mapping[str, float],
             accuracy: Mapping[str, float] | None = None, overall: float | None = None,
             tag: str = "valid") -> None:
        """Validation loss per domain (and overall) under ``tag``, accuracy per task.

        Curve points use ``valid``; the end-of-run evaluation on the full validation set
        uses ``final``, so the two never share a step of one TensorBoard series.
        """
        scalars = {f"{tag}/loss/{d}": v for d, v in losses.items()}
        if overall is not None and losses:
            scalars[f"{tag}/loss"] = overall
        scalars |= {f"acc/{t}": v for t, v in (accuracy or {}).items()}
        self._write_scalars(step, scalars)

    def flush(self) -> None:
        """Everything logged so far on disk (before a checkpoint, so resumes agree)."""
        if self._jsonl is not None:
            self._jsonl.flush()
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        self._bar.close()
        if self._jsonl is not None:
            self._jsonl.close()
            self._jsonl = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        n_slow, n = self._slow_data
        if self.progress and n_slow > 1:
            print(f"[{self.run_id}] waiting for data took over {DATA_WAIT_WARN:.0%} of step "
                  f"time in {n_slow} of {n} logging intervals", file=sys.stderr, flush=True)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc) -> None:
        self.flush()  # stays open: the final evaluation is logged after the loop

    def _reset_interval(self, now: float) -> None:
        self._t_interval, self._n_interval = now, 0
        self._parts = dict.fromkeys(TIME_PARTS, 0.0)

    def _split(self, now: float) -> dict:
        """The interval's time split (seconds per step); starts the next interval."""
        n, wall = self._n_interval, now - self._t_interval
        out = {"step_time_s": wall / n} | {f"{p}_s": t / n for p, t in self._parts.items()}
        self._reset_interval(now)
        return out

    def _interval(self, step: int, row: dict) -> None:
        frac = {p: row[f"{p}_s"] / row["step_time_s"] for p in TIME_PARTS}
        self._slow_data[1] += 1
        if frac["data"] > DATA_WAIT_WARN:
            self._slow_data[0] += 1
            if self._slow_data[0] == 1 and self.active:
                print(f"\nwarning: [{self.run_id}] waiting for data took {frac['data']:.0%} of "
                      f"step time before step {step} (over {DATA_WAIT_WARN:.0%}): more loader "
                      "workers or prefetch would help", file=sys.stderr, flush=True)
        self._write_scalars(step, {
            "train/loss": row["loss"], "train/grad_norm": row["grad_norm"], "train/lr": row["lr"],
            "perf/tokens_per_s": row["tokens_per_s"], "perf/mfu": row["mfu"],
            "perf/step_time_s": row["step_time_s"]}
            | {f"time/{p}_frac": f for p, f in frac.items()})
        self._bar.update(step, f"loss {row['loss']:.4f} "
                         f"{row['tokens_per_s']:,.0f} tok/s MFU {100 * row['mfu']:.1f}% "
                         f"{1e3 * row['step_time_s']:.0f} ms/step (data {frac['data']:.0%} "
                         f"step {frac['step']:.0%} eval {frac['eval']:.0%} "
                         f"ckpt {frac['ckpt']:.0%})")

    def _write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        scalars = {k: float(v) for k, v in scalars.items() if v is not None
                   and math.isfinite(v)}
        if self._tb is not None:
            for tag, v in scalars.items():
                self._tb.add_scalar(tag, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)


def _json_line(row: Mapping) -> str:
    try:  # the common all-finite row without dumps_json's walk (it runs every step)
        return json.dumps(row, allow_nan=False) + "\n"
    except ValueError:  # NaN/inf (e.g. a grad norm): null, flagged under "_nonfinite"
        return dumps_json(row) + "\n"


def require_wandb() -> None:
    """Raise one clear line when ``--wandb`` is asked for without the package."""
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        raise ValueError("--wandb: the wandb package is not installed (pip install wandb); "
                         "TensorBoard event files are written without it")


def _open_wandb(run_dir: Path, run_id: str, config: Mapping):
    import wandb

    # offline: nothing leaves the machine; `wandb sync RUN_DIR/wandb/offline-run-*` uploads
    return wandb.init(project="datalaws", name=run_id, id=run_id, dir=str(run_dir),
                      mode="offline", config=dict(config), resume="allow")


class ProfileWindow:
    """A JAX profiler trace of steps ``first..last`` (inclusive) under ``log_dir``.

    Traces land in ``log_dir/plugins/profile/<time>/`` (TensorBoard's profile plugin reads
    them from the run's log directory; Perfetto opens ``perfetto_trace.json.gz``). A resumed
    run traces the part of the window it runs; a run that stops inside it ends the trace.
    """

    def __init__(self, log_dir: str | Path, steps: tuple[int, int] | None):
        self.log_dir, self.steps = Path(log_dir), steps
        self.active = steps is not None and _is_writer()
        self._tracing = False

    @contextlib.contextmanager
    def step(self, n: int) -> Iterator[None]:
        """Wrap step ``n`` (1-based, as in metrics.jsonl): its data fetch and its update."""
        if not self.active or not self.steps[0] <= n <= self.steps[1]:
            yield
            return
        if not self._tracing:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            jax.profiler.start_trace(str(self.log_dir), create_perfetto_trace=True)
            self._tracing = True
        with jax.profiler.StepTraceAnnotation("train", step_num=n):
            yield
        if n == self.steps[1]:
            self.stop()

    def stop(self) -> None:
        if self._tracing:
            jax.profiler.stop_trace()
            self._tracing = False

    def __enter__(self) -> ProfileWindow:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
