"""Sweeps: a TOML grid expands to runs with stable ids; the local executor runs them.

A spec::

    [defaults]            # every run gets these (data store, seq_len, batch, lr, ...)
    data = "store"
    seq_len = 64
    [grid]                # the product of these lists
    preset = ["micro", "mini"]
    tokens = [2e5, 4e5]
    mixture = ["code=0.6,docs=0.2,docstrings=0.2", "code=0.2,docs=0.4,docstrings=0.4"]
    seed = [0]
    [[runs]]              # and/or explicit runs, one table each (what `datalaws next` writes)
    preset = "mini"
    tokens = 8e5

A run's id is a hash of its normalised config, so relaunching a sweep finds its runs again:
finished runs (a record with status done/diverged) are skipped, partial ones resume from
their checkpoints, failed ones are retried only when asked.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

from datalaws.records import parse_mixture

__all__ = ["Run", "load_spec", "expand", "run_local", "status", "run_state", "preflight_runs",
           "plan_runs"]


@dataclasses.dataclass(frozen=True)
class Run:
    run_id: str
    config: dict

    @property
    def out(self) -> Path:
        return Path(self.config["out"])


def _normalise(cfg: dict) -> dict:
    out = dict(cfg)
    if isinstance(out.get("mixture"), str):
        out["mixture"] = {k: round(v, 6) for k, v in parse_mixture(out["mixture"]).items()}
    if "tokens" in out:
        out["tokens"] = int(float(out["tokens"]))
    return out


def load_spec(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such sweep spec")
    with open(path, "rb") as f:
        try:
            spec = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{path}: invalid TOML ({e})") from None
    if "grid" not in spec and "runs" not in spec:
        raise ValueError(f"{path}: a sweep spec needs a [grid] table or [[runs]] tables")
    spec.setdefault("defaults", {})
    spec.setdefault("out", str(path.with_suffix("")) + "_runs")
    _check_spec(path, spec)
    return spec


_REQUIRED = ("preset", "tokens", "data", "mixture")
_COUNTS = ("tokens", "batch", "seq_len", "save_every", "grad_accum", "unique_tokens")


def _check_spec(path: Path, spec: dict) -> None:
    """Refuse a spec whose runs would fail one by one later: one line naming the key."""
    from datalaws.model.config import RunConfig
    from datalaws.model.transformer import PRESETS

    out = Path(spec["out"])
    if out.exists() and not out.is_dir():
        raise ValueError(f"{path}: out = {str(out)!r} is a file, not a folder")
    runs = expand(spec)
    if not runs:
        raise ValueError(f"{path}: the sweep has no runs (an empty list in the grid?)")
    for r in runs:
        c = r.config
        missing = [k for k in _REQUIRED if c.get(k) in (None, "", {})]
        if missing:
            raise ValueError(f"{path}: runs need {missing}; set them in [defaults] or the grid")
        if c["preset"] not in PRESETS:
            raise ValueError(f"{path}: preset {c['preset']!r} is unknown; presets are "
                             f"{', '.join(PRESETS)}")
        for key in _COUNTS:
            try:
                ok = c.get(key) is None or float(c[key]) > 0
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"{path}: {key} = {c[key]!r} must be a positive number")
        try:  # every other setting as `datalaws train` will read it (the store may come later)
            RunConfig.from_dict(c, need_store=False)
        except ValueError as e:
            raise ValueError(f"{path}: " + "; ".join(str(e).splitlines())) from None


def expand(spec: dict) -> list[Run]:
    """All runs of the grid, each with a stable id and its own output folder.

    ``eval_mix`` (top level or in [defaults]) declares once the composition of every run's
    ``loss`` over the store's validation domains; a grid may not vary it."""
    grid = spec.get("grid") or {}
    if "eval_mix" in grid:
        raise ValueError("sweep spec: eval_mix is declared once for the sweep (top level or "
                         "[defaults]), not in [grid]: every run must share one target")
    defaults = spec["defaults"]
    if spec.get("eval_mix"):
        mix = spec["eval_mix"]
        defaults = defaults | {"eval_mix": parse_mixture(mix) if isinstance(mix, str)
                               else dict(mix)}
    keys = sorted(grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(
        *(grid[k] if isinstance(grid[k], list) else [grid[k]] for k in keys))] if grid else []
    combos += [dict(r) for r in spec.get("runs", [])]  # [[runs]]: explicit runs (`next`)
    runs = []
    for over in combos:
        cfg = _normalise(defaults | over)
        run_id = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
        cfg |= {"run_id": run_id, "out": str(Path(spec["out"]) / run_id)}
        runs.append(Run(run_id, cfg))
    return runs


def run_state(run: Run) -> dict:
    """done / diverged / failed / preempted / partial / pending, with progress and last loss."""
    rec = run.out / f"{run.run_id}.record.json"
    st = {"run_id": run.run_id, "state": "pending", "step": 0, "loss": None}
    metrics = run.out / "metrics.jsonl"
    if metrics.exists():
        lines = [ln for ln in metrics.read_text().splitlines() if ln.strip()]
        if lines:
            try:
                last = json.loads(lines[-1])
                st.update(step=last["step"], loss=last["loss"], state="partial",
                          tokens_per_s=last.get("tokens_per_s", 0.0))
            except (json.JSONDecodeError, KeyError):
                pass
    if (run.out / "failed.json").exists():
        st["state"] = "failed"
        st["exit_code"] = json.loads((run.out / "failed.json").read_text())["exit_code"]
    if rec.exists():
        try:
            st["state"] = json.loads(rec.read_text())["status"]
        except json.JSONDecodeError:
            st["state"] = "corrupt-record"
    return st


def run_local(runs: list[Run], *, parallel: int = 2, retry_failed: bool = False,
              progress: bool = True, compile_cache: str | Path | None = None
              ) -> dict[str, int]:
    """Run pending / partial runs as ``datalaws train`` processes, ``parallel`` at a time.

    ``compile_cache``: a JAX persistent compilation cache shared by the runs, so runs of the
    same shape skip XLA compilation (on CPU most of a tiny run's time).
    """
    from datalaws.records import atomic_write_text

    if parallel < 1:  # 0 would wait forever for a free slot
        raise ValueError(f"--parallel {parallel}: run at least one at a time")
    todo = _to_run(runs, retry_failed)
    if progress:
        print(f"sweep: {len(runs)} runs, {len(runs) - len(todo)} already finished, "
              f"{len(todo)} to run ({parallel} at a time)", flush=True)
    env = _run_env(compile_cache)
    running: dict[str, tuple[subprocess.Popen, Run, float]] = {}
    codes: dict[str, int] = {}
    queue = list(todo)
    t0 = time.perf_counter()
    from datalaws.progress import Progress

    bar = Progress(len(todo), "sweep", enabled=progress)
    try:
        while queue or running:
            while queue and len(running) < parallel:
                r = queue.pop(0)
                r.out.mkdir(parents=True, exist_ok=True)
                (r.out / "failed.json").unlink(missing_ok=True)
                log = open(r.out / "train.log", "a")
                p = subprocess.Popen([sys.executable, "-m", "datalaws.cli", "train",
                                      "--config-json", json.dumps(r.config)], stdout=log,
                                     stderr=subprocess.STDOUT, env=env)
                running[r.run_id] = (p, r, time.perf_counter())
            for rid, (p, r, _) in list(running.items()):
                code = p.poll()
                if code is None:
                    continue
                codes[rid] = code
                del running[rid]
                if code not in (0, 75, 130):  # preempted or Ctrl-C: checkpoint saved
                    atomic_write_text(r.out / "failed.json", json.dumps({"exit_code": code}))
            done = len(codes)
            el = time.perf_counter() - t0
            eta = f", ETA {el / done * (len(todo) - done):.0f} s" if done else ""
            bar.update(done, f"finished, {len(running)} running, {el:.0f} s elapsed{eta}")
            time.sleep(0.5)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: each run saves a checkpoint, then we stop
        for p, _, _ in running.values():
            p.send_signal(signal.SIGTERM)
        for p, _, _ in running.values():
            p.wait()
        bar.close()
        raise
    bar.close()
    return codes


def _to_run(runs: list[Run], retry_failed: bool) -> list[Run]:
    """Runs not finished (done or diverged); failed ones only when retried."""
    todo = []
    for r in runs:
        s = run_state(r)["state"]
        if s in ("done", "diverged") or (s == "failed" and not retry_failed):
            continue
        todo.append(r)
    return todo


def _run_env(compile_cache: str | Path | None) -> dict[str, str]:
    """One host device per run process; a persistent compilation cache shared by the runs."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    if compile_cache is not None:
        env |= {"JAX_COMPILATION_CACHE_DIR": str(compile_cache),
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return env


def status(runs: list[Run], queued: dict[str, dict] | None = None) -> list[dict]:
    """Each run's state; runs the scheduler lists as alive show as queued / running."""
    from datalaws.model.config import RunConfig

    rows = []
    for r in runs:
        st = run_state(r)
        q = (queued or {}).get(r.run_id)
        if q and st["state"] not in ("done", "diverged"):
            st |= {"state": "running" if q["state"] == "RUNNING" else "queued",
                   "job": q["job"], "task": q["task"]}
        c = RunConfig.from_dict(r.config, need_store=False)  # steps as `train` counts them
        per_step, steps = c.tokens_per_step, c.steps
        if st["state"] in ("partial", "running") and st.get("tokens_per_s"):
            st["eta_s"] = (steps - st["step"]) * per_step / st["tokens_per_s"]
        rows.append(st | {"preset": r.config.get("preset"), "tokens": r.config.get("tokens"),
                          "steps": steps, "mixture": r.config.get("mixture")})
    return rows


def plan_runs(runs: list[Run]) -> tuple[list[dict], list[str]]:
    """Each run's steps, tokens trained, FLOPs per token and FLOPs, read from its
    ``RunConfig`` exactly as `datalaws train` builds it (the vocabulary is the store's
    tokenizer's); and notes for stores that have no tokenizer yet (then the spec's
    ``vocab``, else the model's default, is assumed)."""
    from datalaws.model.config import RunConfig, store_vocab

    rows, notes = [], set()
    for r in runs:
        c = RunConfig.from_dict(r.config, need_store=False)
        if store_vocab(c.data.store) is None:
            notes.add(f"store {c.data.store} has no tokenizer yet: FLOPs assume vocab "
                      f"{c.model.vocab}" + ("" if "vocab" in r.config else
                                            " (set vocab = N in the spec to say it)"))
        rows.append({"run_id": r.run_id, "preset": c.preset, "steps": c.steps,
                     "tokens": c.trained_tokens, "flops_per_token": c.flops_per_token,
                     "flops": c.flops, "mixture": r.config.get("mixture")})
    return rows, sorted(notes)


def _shape(cfg: dict) -> tuple:
    """What decides a run's compiled step: model, batch, context, accumulation, mesh (as
    `datalaws train` reads them: the vocabulary is the store's tokenizer's)."""
    from datalaws.model.config import RunConfig
    from datalaws.model.sharding import MESH_AXES

    c = RunConfig.from_dict(cfg, need_store=False)
    m, mesh = c.model, c.train.mesh
    return (c.preset, c.train.batch, m.seq_len, c.train.grad_accum,
            {False: "none", True: "full"}.get(m.remat, str(m.remat)),
            None if mesh is None else ",".join(f"{a}={n}" for a, n in zip(MESH_AXES, mesh)),
            m.dtype, m.vocab)


def preflight_runs(runs: list[Run], topology: str) -> list[dict]:
    """Compile each distinct train step of the sweep for ``topology`` (``datalaws
    preflight``, without the hardware); one result per shape, with the run ids it covers."""
    from datalaws.model.preflight import run_preflight

    shapes: dict[tuple, list[str]] = {}
    for r in runs:
        shapes.setdefault(_shape(r.config), []).append(r.run_id)
    out = []
    for (preset, batch, seq_len, accum, remat, mesh, dtype, vocab), ids in shapes.items():
        res = run_preflight(topology, preset, batch=batch, seq_len=seq_len, grad_accum=accum,
                            remat=remat, mesh=mesh, dtype=dtype, vocab=vocab)
        out.append(res | {"runs": ids})
    return out
