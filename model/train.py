"""Training: one sharded ``jax.jit`` step, Orbax checkpoints that resume exactly, a RunRecord.

``train(config, streams)`` builds the mesh, initialises the sharded model and AdamW state,
restores the latest checkpoint if the run directory has one (params, optimizer, step, RNG
and the grain iterator's position), then steps until the token budget is spent. It saves
every ``save_every`` steps, at the end, and on SIGTERM (then returns ``EXIT_REQUEUE`` so a
scheduler requeues the job). A non-finite loss stops the run without saving over the last
good checkpoint and writes the record with status ``diverged``.

Evaluation (``datalaws.model.evaluation``): every ``eval_every`` steps the model is scored
on a fixed subset of the store's validation windows of every domain (a curve point in
metrics.jsonl: ``eval`` per domain and ``eval_loss`` on the declared composition), and at the
end on ``eval_windows`` windows per domain (the record's ``eval_losses`` and ``loss``).
Schedules (optax): ``cosine`` (warmup, cosine decay to ``min_lr_frac``) or ``wsd``
(warmup, stable at the peak, then a linear decay over the last ``decay_frac`` of steps);
``z_loss`` adds ``z_loss * logsumexp(logits)^2`` to the objective (PaLM), not to the
reported loss.
"""

from __future__ import annotations

import dataclasses
import json
import math
import signal
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import NamedSharding

from datalaws.data.loader import LoaderConfig, make_loader
from datalaws.exitcodes import EXIT_REQUEUE
from datalaws.model.evaluation import Validator, composite_loss
from datalaws.model.flops import flops_per_token, peak_flops
from datalaws.model.metrics import ProfileWindow, RunLogger
from datalaws.model.record import run_record
from datalaws.model.resume import check_run_dir, previous_wall_time, truncate_metrics
from datalaws.model.sharding import (
    batch_spec,
    is_primary,
    logical_spec,
    make_mesh,
    mesh_platform,
    named_shardings,
)
from datalaws.model.transformer import ModelConfig, Transformer, attention_impl, count_params
from datalaws.records import atomic_write_text, write_record

__all__ = ["TrainConfig", "train", "make_mesh", "init_state", "make_train_step", "EXIT_REQUEUE",
           "CheckpointError"]



class CheckpointError(ValueError):
    """A checkpoint cannot be restored (corrupt, or from a different model)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """One training run."""

    model: ModelConfig
    tokens: int  # training token budget (with repetition)
    batch: int = 8  # sequences per optimizer step (global)
    grad_accum: int = 1  # microbatches per step; batch % grad_accum == 0
    lr: float = 3e-3  # peak learning rate
    schedule: str = "cosine"  # "cosine" or "wsd" (warmup-stable-decay)
    warmup_frac: float = 0.05  # share of steps spent warming up
    decay_frac: float = 0.2  # wsd: share of steps spent decaying at the end
    min_lr_frac: float = 0.1  # the schedule decays to this share of lr
    z_loss: float = 0.0  # weight of the logsumexp^2 penalty (0: off)
    weight_decay: float = 0.1
    clip: float = 1.0  # global gradient-norm clip
    mixture: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"train": 1.0})
    unique_tokens: int | None = None  # unique-token budget (repetition = tokens / unique)
    seed: int = 0
    # (data, fsdp, tensor) degrees, one may be -1 (the rest); None: fsdp over all devices
    mesh: tuple[int, int, int] | None = None
    save_every: int = 100  # steps between checkpoints
    keep: int = 2  # checkpoints kept
    eval_every: int = 100  # steps between validation-curve points (0: only at the end)
    eval_windows: int = 64  # validation windows per domain for the final losses
    curve_windows: int = 16  # the fixed subset of them scored every eval_every steps
    eval_mix: Mapping[str, float] | None = None  # composition of `loss` (None: uniform)
    run_id: str = "run"
    pool: str | None = None
    loader_workers: int = 0  # grain prefetch processes per host (0: threads)
    log_every: int = 10  # steps between TensorBoard writes, time splits and progress lines

    def __post_init__(self):
        if self.tokens <= 0:
            raise ValueError(f"TrainConfig.tokens={self.tokens} must be > 0")
        if self.batch % self.grad_accum:
            raise ValueError(f"TrainConfig.batch={self.batch} is not divisible by "
                             f"grad_accum={self.grad_accum}")
        if self.steps < 1:
            raise ValueError(f"TrainConfig: tokens={self.tokens} is less than one batch of "
                             f"{self.batch}x{self.model.seq_len}")
        if self.schedule not in ("cosine", "wsd"):
            raise ValueError(f"TrainConfig.schedule={self.schedule!r}; use cosine or wsd")
        if not 0 <= self.decay_frac <= 1 or self.z_loss < 0 or self.eval_every < 0:
            raise ValueError(f"TrainConfig: decay_frac={self.decay_frac} must lie in [0, 1], "
                             f"z_loss={self.z_loss} and eval_every={self.eval_every} >= 0")

    @property
    def steps(self) -> int:
        return self.tokens // (self.batch * self.model.seq_len)

    @property
    def repetitions(self) -> float:
        return 1.0 if self.unique_tokens is None else self.tokens / self.unique_tokens


def _schedule(c: TrainConfig) -> optax.Schedule:
    warmup = max(1, int(c.warmup_frac * c.steps))
    if c.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(0.0, c.lr, warmup, max(c.steps, warmup + 1),
                                                  end_value=c.lr * c.min_lr_frac)
    # wsd: a checkpoint saved before the decay can be decayed to a shorter budget
    decay = max(1, int(c.decay_frac * c.steps))
    stable = max(0, c.steps - warmup - decay)
    return optax.join_schedules(
        [optax.linear_schedule(0.0, c.lr, warmup), optax.constant_schedule(c.lr),
         optax.linear_schedule(c.lr, c.lr * c.min_lr_frac, decay)],
        boundaries=[warmup, warmup + stable])


def schedule_info(c: TrainConfig) -> dict:
    """The learning-rate schedule as the run record states it."""
    warmup = max(1, int(c.warmup_frac * c.steps))
    out = {"name": c.schedule, "lr": c.lr, "warmup_steps": warmup,
           "min_lr": c.lr * c.min_lr_frac, "steps": c.steps, "z_loss": c.z_loss}
    if c.schedule == "wsd":
        out["decay_steps"] = max(1, int(c.decay_frac * c.steps))
    return out


def _optimizer(c: TrainConfig) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(c.clip),
                       optax.adamw(_schedule(c), b1=0.9, b2=0.95, weight_decay=c.weight_decay))


def init_state(c: TrainConfig, mesh: jax.sharding.Mesh, *, abstract_only: bool = False):
    """(graphdef, sharded state of (model, optimizer), state shardings).

    ``abstract_only``: the state as ShapeDtypeStructs (for ahead-of-time compilation on a
    described topology, see ``datalaws.model.preflight``)."""

    # "auto" attention resolved for the mesh's platform and dtype (cuDNN: GPU, bf16/fp16)
    model_c = dataclasses.replace(c.model, attention=attention_impl(
        c.model.attention, c.model.dtype, mesh_platform(mesh)))

    def build():
        model = Transformer(model_c, rngs=nnx.Rngs(c.seed))
        return model, nnx.Optimizer(model, _optimizer(c), wrt=nnx.Param)

    # the weights' logical names -> mesh axes (sharding.RULES), fitted to each shape; the
    # jit's out_shardings place them, so eager per-variable sharding is off
    with jax.set_mesh(mesh), nnx.use_eager_sharding(False):
        graphdef, abstract = nnx.split(nnx.eval_shape(build))
        shardings = named_shardings(abstract, mesh)

        @partial(jax.jit, out_shardings=shardings)
        def init():
            return nnx.state(build())

        if not abstract_only:
            return graphdef, init(), shardings
        return graphdef, jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(
            a.shape, a.dtype, sharding=s), abstract, shardings), shardings


def _loss(model: Transformer, batch: Mapping[str, jax.Array], z_loss: float = 0.0
          ) -> tuple[jax.Array, jax.Array]:
    """(objective, cross-entropy): documents masked by the batch's positions and segments."""
    logits_BTV = model(batch["inputs"], batch.get("positions"), batch.get("segments"))
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_BTV, batch["targets"]).mean()
    if not z_loss:
        return ce, ce
    z_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
    return ce + z_loss * jnp.mean(z_BT**2), ce


def make_train_step(graphdef, shardings, mesh, grad_accum: int, z_loss: float = 0.0):
    """The jitted step ``(state, batch) -> (state, metrics)`` with explicit shardings;
    ``metrics["loss"]`` is the cross-entropy (without the z-loss term).

    The batch is split over data x fsdp (sharding.RULES); tracing under the mesh lets the
    model pin its activations to their logical axes (``sharding.constrain``)."""
    batch_sharding = NamedSharding(mesh, logical_spec(("batch", "sequence")))

    def step(state, batch):
        with jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
            return _step(state, batch)

    def _step(state, batch):
        model, opt = nnx.merge(graphdef, state)
        model_def, params, rest = nnx.split(model, nnx.Param, ...)
        grad_fn = jax.value_and_grad(
            lambda p, mb: _loss(nnx.merge(model_def, p, rest), mb, z_loss), has_aux=True)

        if grad_accum == 1:
            (_, loss), grads = grad_fn(params, batch)
        else:  # microbatches in a scan; the mean of equal-sized means is the batch mean
            def micro(carry, mb):
                return jax.tree.map(jnp.add, carry, grad_fn(params, mb)), None

            # microbatch j takes rows j, j + A, j + 2A, ...: every device keeps its own rows
            mbs = jax.tree.map(lambda x: x.reshape(-1, grad_accum, *x.shape[1:]).swapaxes(0, 1),
                               batch)
            zeros = ((jnp.zeros(()), jnp.zeros(())), jax.tree.map(jnp.zeros_like, params))
            ((_, loss), grads), _ = jax.lax.scan(micro, zeros, mbs)
            loss, grads = jax.tree.map(lambda x: x / grad_accum, (loss, grads))
        opt.update(model, grads)
        return nnx.state((model, opt)), {"loss": loss, "grad_norm": optax.tree.norm(grads)}

    return jax.jit(step, in_shardings=(shardings, batch_sharding),
                   out_shardings=(shardings, None), donate_argnums=0)


class _Preempted:
    """Turns SIGTERM (a scheduler's preemption) and SIGINT (Ctrl-C) into a flag the loop
    checks after each step: it then saves a checkpoint and stops."""

    def __init__(self):
        self.flag = False
        self.signal: str | None = None

    def __enter__(self):
        import threading

        self._main = threading.current_thread() is threading.main_thread()
        if self._main:  # signal handlers can only be set from the main thread
            self._old = signal.signal(signal.SIGTERM, self._set)
            self._old_int = signal.signal(signal.SIGINT, self._set)
        return self

    def _set(self, signum, *_):
        self.flag = True
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc):
        if self._main:
            signal.signal(signal.SIGTERM, self._old)
            signal.signal(signal.SIGINT, self._old_int)


def _checkpoint_manager(run_dir: Path, keep: int) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        (run_dir / "checkpoints").absolute(),
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=True),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "data": grain.checkpoint.CheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})


def _restore(mgr, state, iterator, model_config: ModelConfig):
    step = mgr.latest_step()
    if step is None:
        return state, 0
    try:
        meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:
        raise CheckpointError(f"{mgr.directory}/{step}: cannot read checkpoint metadata "
                              f"({type(e).__name__}: {e})") from None
    if meta.get("model") != dataclasses.asdict(model_config):
        raise CheckpointError(f"{mgr.directory}/{step}: checkpoint is of a different model "
                              f"{meta.get('model')}; this run is "
                              f"{dataclasses.asdict(model_config)}")
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    try:
        out = mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target),
            data=grain.checkpoint.CheckpointRestore(iterator)))
    except Exception as e:
        raise CheckpointError(f"{mgr.directory}/{step}: corrupt or incompatible checkpoint "
                              f"({type(e).__name__}: {str(e)[:300]})") from None
    return out["state"], step


def _save(mgr, step, state, iterator, c: TrainConfig, wall_time: float = 0.0):
    mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=grain.checkpoint.CheckpointSave(iterator),
        meta=ocp.args.JsonSave({"model": dataclasses.asdict(c.model), "step": step,
                                "train": _config_dict(c), "wall_time": wall_time})))


def _saved_meta(mgr) -> dict | None:
    """The latest checkpoint's metadata (model, train config, step, wall_time), or None."""
    step = mgr.latest_step()
    if step is None:
        return None
    try:
        return mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    except Exception as e:
        raise CheckpointError(f"{mgr.directory}/{step}: cannot read checkpoint metadata "
                              f"({type(e).__name__}: {e})") from None


def train(c: TrainConfig, streams: Mapping[str, np.ndarray], run_dir: str | Path, *,
          eod: int, valid: Mapping[str, np.ndarray] | None = None, quality: Mapping | None = None,
          eval_fn=None, stop_after: int | None = None, progress: bool = True,
          profile_steps: tuple[int, int] | None = None, wandb: bool = False,
          validation: Mapping | None = None, chance: Mapping[str, float] | None = None,
          record_config: Mapping | None = None) -> int:
    """Train, checkpoint, evaluate and write the RunRecord. Returns a process exit code.

    Metrics go to metrics.jsonl and TensorBoard event files in ``run_dir`` (and offline W&B
    with ``wandb``); ``profile_steps=(first, last)`` writes a JAX profiler trace of those
    steps there (see ``datalaws.model.metrics``).

    ``stop_after`` stops (as if preempted, but without a signal) after that many steps of
    this invocation; tests use it. ``eval_fn(model) -> {task: accuracy}`` adds downstream
    accuracy to the record, ``chance`` each task's chance level. ``valid`` maps every domain
    of the store to its validation tokens; ``validation`` (``store_validation``) identifies
    them in the record. ``record_config``: the config the record stores (the ``RunConfig``'s
    ``to_dict()`` from ``datalaws.model.run.train``; default: this TrainConfig's fields).
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    mgr = _checkpoint_manager(run_dir, c.keep)
    meta = _saved_meta(mgr)  # a finished run, or a resume with another config: refuse now
    check_run_dir(run_dir, _config_dict(c), lambda: meta)
    mesh = make_mesh(c.mesh)
    graphdef, state, shardings = init_state(c, mesh)
    iterator, batch_sharding = _batches(c, streams, eod, mesh)
    state, start = _restore(mgr, state, iterator, c.model)
    validator, eval_mix = _validation(c, valid, eod)
    log = _logger(c, run_dir, mesh, start, wandb=wandb, progress=progress)
    # wall_time counts every invocation's training loop, up to the restored checkpoint
    t_run = time.perf_counter() - (previous_wall_time(meta) if start else 0.0)
    loop = _Loop(c=c, mgr=mgr, iterator=iterator, graphdef=graphdef, log=log,
                 step_fn=make_train_step(graphdef, shardings, mesh, c.grad_accum, c.z_loss),
                 batch_sharding=batch_sharding, validator=validator, eval_mix=eval_mix,
                 t_run=t_run)
    with _Preempted() as pre, log, ProfileWindow(run_dir, profile_steps) as prof:
        state, step, status, error, loss = loop.run(state, start, pre, prof, stop_after)
    mgr.wait_until_finished()
    if progress:
        print(flush=True)
    code = EXIT_REQUEUE if status == "preempted" else 0
    if pre.signal:  # one line, then the caller exits (130 for Ctrl-C, requeue for SIGTERM)
        print(f"[{c.run_id}] interrupted by {pre.signal} at step {step}: checkpoint saved in "
              f"{run_dir}; rerun the same command to resume", file=sys.stderr, flush=True)
        code = 130 if pre.signal == "SIGINT" else EXIT_REQUEUE
    eval_losses, accuracy, overall = loop.final(state, step, status, loss, eval_fn)
    record = run_record(c, status, step, mesh, quality=quality, loss=overall,
                        eval_losses=eval_losses, eval_mix=eval_mix, validation=validation,
                        accuracy=accuracy, chance=chance, wall_time=time.perf_counter() - t_run,
                        error=error, config=record_config or _config_dict(c),
                        schedule=schedule_info(c))
    if not is_primary():
        pass  # the other processes trained the same step; process 0 writes the record
    elif status != "preempted":
        write_record(record, run_dir)
    else:
        atomic_write_text(run_dir / "preempted.json", json.dumps({"step": step}))
    return code


def _validation(c: TrainConfig, valid: Mapping | None, eod: int) -> tuple[Validator, dict]:
    """The validator of every domain's windows and the composition of the run's loss
    (declared, else uniform over the domains)."""
    validator = Validator(valid or {}, seq_len=c.model.seq_len, eod=eod,
                          eval_windows=c.eval_windows, curve_windows=c.curve_windows,
                          batch=c.batch)
    eval_mix = dict(c.eval_mix) if c.eval_mix else {d: 1 / len(valid) for d in valid or {}}
    return validator, eval_mix


def _batches(c: TrainConfig, streams: Mapping[str, np.ndarray], eod: int, mesh):
    """(iterator over this process's slice of each global batch, the batch's sharding)."""
    n_proc = jax.process_count()
    if c.batch % n_proc:
        raise ValueError(f"TrainConfig.batch={c.batch} is not divisible by the {n_proc} "
                         "processes")
    loader = make_loader(streams, LoaderConfig(seq_len=c.model.seq_len, batch=c.batch // n_proc,
                                               mixture=dict(c.mixture), seed=c.seed,
                                               unique_tokens=c.unique_tokens, epochs=None,
                                               workers=c.loader_workers), eod=eod,
                         process_index=jax.process_index(), process_count=n_proc)
    return iter(loader), NamedSharding(mesh, batch_spec(mesh, c.batch))


def _logger(c: TrainConfig, run_dir: Path, mesh, start: int, *, wandb: bool,
            progress: bool) -> RunLogger:
    """The run's logger, metrics.jsonl cut back to the restored step, and the opening line."""
    metrics_path = run_dir / "metrics.jsonl"
    if not is_primary():
        pass  # multi-host: process 0 alone owns the run directory's files
    elif start == 0:
        metrics_path.unlink(missing_ok=True)
    else:  # drop lines past the restored step (written after the last checkpoint)
        truncate_metrics(metrics_path, start)
    log = RunLogger(run_dir, run_id=c.run_id, steps=c.steps, log_every=c.log_every,
                    tokens_per_step=c.batch * c.model.seq_len,
                    flops_per_token=flops_per_token(c.model),
                    peak_flops=peak_flops() * mesh.size,  # the chips the step runs on
                    start=start, config=_config_dict(c), wandb=wandb, progress=progress)
    if progress:
        impl = attention_impl(c.model.attention, c.model.dtype, mesh_platform(mesh))
        print(f"[{c.run_id}] {count_params(c.model)[0] / 1e6:.2f}M params, {c.steps} steps x "
              f"{c.batch}x{c.model.seq_len} tokens, attention={impl}, mesh={dict(mesh.shape)}, "
              f"{'resuming at step ' + str(start) if start else 'from scratch'}", flush=True)
    return log


@dataclasses.dataclass
class _Loop:
    """The training loop's parts: step, validation curve, checkpoints, preemption."""

    c: TrainConfig
    mgr: ocp.CheckpointManager
    iterator: object
    graphdef: object
    log: RunLogger
    step_fn: object
    batch_sharding: NamedSharding
    validator: Validator
    eval_mix: dict
    t_run: float

    def run(self, state, start: int, pre: _Preempted, prof: ProfileWindow,
            stop_after: int | None):
        """Step until the budget is spent, the loss is not finite, or a stop is asked:
        (state, step, status, error, last loss)."""
        c, log = self.c, self.log
        schedule = _schedule(c)
        status, error, loss, step = "done", None, float("nan"), start
        while step < c.steps:
            with prof.step(step + 1):
                with log.timed("data"):
                    batch = next(self.iterator)
                with log.timed("step"):  # float() waits for the device
                    state, m = self.step_fn(state, {k: jax.make_array_from_process_local_data(
                        self.batch_sharding, v) for k, v in batch.items()})
                    loss = float(m["loss"])
            step += 1
            if not math.isfinite(loss):
                status, error = "diverged", f"non-finite loss {loss} at step {step}"
                break
            point = None
            if self.validator.final and c.eval_every and (step % c.eval_every == 0
                                                         or step == c.steps):
                with log.timed("eval"):
                    curve = self.validator.losses(self.graphdef, state, curve=True)
                point = {"eval": curve, "eval_loss": composite_loss(curve, self.eval_mix)}
                log.eval(step, curve, overall=point["eval_loss"])
            log.step(step, loss=loss, grad_norm=float(m["grad_norm"]),
                     lr=float(schedule(step - 1)), extra=point)  # this step's update
            if step % c.save_every == 0 or step == c.steps:
                with log.timed("ckpt"):
                    self.save(step, state)
            if pre.flag or (stop_after is not None and step - start >= stop_after):
                if step % c.save_every and step != c.steps:
                    self.save(step, state)
                status = "preempted"
                break
        return state, step, status, error, loss

    def final(self, state, step: int, status: str, loss: float, eval_fn):
        """(validation losses, task accuracy, the run's loss) at the end of a finished run."""
        eval_losses, accuracy = {}, {}
        if status == "done":
            eval_losses = self.validator.losses(self.graphdef, state)
            if eval_fn is not None:
                accuracy = eval_fn(nnx.merge(self.graphdef, state)[0])
        # one target for every run of a store: the declared composition of the fixed
        # validation set, never the run's own training mixture; none: the last train loss
        overall = (composite_loss(eval_losses, self.eval_mix) if eval_losses
                   else (loss if math.isfinite(loss) else None))
        if status == "done":
            self.log.eval(step, eval_losses, accuracy,
                          overall=overall if eval_losses else None, tag="final")
        self.log.close()
        return eval_losses, accuracy, overall

    def save(self, step: int, state) -> None:
        self.log.flush()
        _save(self.mgr, step, state, self.iterator, self.c, time.perf_counter() - self.t_run)


def _config_dict(c: TrainConfig) -> dict:
    d = dataclasses.asdict(c)
    d["mixture"] = dict(c.mixture)
    return d
