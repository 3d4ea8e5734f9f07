"""A trained model as a teacher: load it from a run's checkpoint, score token sequences.

``load_model(run_dir)`` restores the latest checkpoint of a run (parameters only are used).
``document_nll(model, docs)`` returns each document's summed next-token negative
log-likelihood and token count, in fixed-shape jitted batches (padding masked out), so
syntheticity = 1 / perplexity = exp(-sum NLL / tokens) can be computed per document or
per domain (Chang et al. 2024).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from datalaws.model.transformer import ModelConfig, Transformer

__all__ = ["load_model", "document_nll", "teacher_scorer"]


def load_model(run_dir: str | Path) -> Transformer:
    """The model of a run's latest checkpoint (errors name the run and what is wrong)."""
    import orbax.checkpoint as ocp

    from datalaws.model.train import (
        CheckpointError,
        TrainConfig,
        _checkpoint_manager,
        init_state,
        make_mesh,
    )

    run_dir = Path(run_dir)
    if not (run_dir / "checkpoints").is_dir():
        raise CheckpointError(f"{run_dir}: no checkpoints/ folder; is it a datalaws run?")
    mgr = _checkpoint_manager(run_dir, keep=10**6)
    step = mgr.latest_step()
    if step is None:
        raise CheckpointError(f"{run_dir}/checkpoints: no checkpoint saved yet")
    meta = mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
    if "train" not in meta:
        raise CheckpointError(f"{run_dir}/checkpoints/{step}: written by an older datalaws "
                              "without its train config")
    train = dict(meta["train"])
    train["model"] = ModelConfig(**meta["model"])
    train["mesh"] = (1, 1, 1)
    train["mixture"] = dict(train["mixture"])
    c = TrainConfig(**{k: v for k, v in train.items()
                       if k in {f.name for f in dataclasses.fields(TrainConfig)}})
    graphdef, state, _ = init_state(c, make_mesh((1, 1, 1)))
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
    try:
        restored = mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(target)))["state"]
    except Exception as e:
        raise CheckpointError(f"{run_dir}/checkpoints/{step}: cannot restore "
                              f"({type(e).__name__}: {str(e)[:200]})") from None
    return nnx.merge(graphdef, restored)[0]


def document_nll(model: Transformer, docs: Sequence[np.ndarray], *, batch: int = 16,
                 progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(summed NLL [docs], scored tokens [docs]); documents longer than the context are
    scored in consecutive windows."""
    T = model.c.seq_len
    windows, owner = [], []
    for i, d in enumerate(docs):
        d = np.asarray(d, dtype=np.int32)
        for s in range(0, max(len(d) - 1, 1), T):
            w = d[s:s + T + 1]
            if len(w) >= 2:
                windows.append(w)
                owner.append(i)
    nll = np.zeros(len(docs))
    count = np.zeros(len(docs))
    graphdef, params = nnx.split(model)

    @jax.jit
    def score(params, x_BT, y_BT, m_BT):
        logits = nnx.merge(graphdef, params)(x_BT)
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y_BT) * m_BT, -1)

    import time

    from datalaws.progress import Progress

    bar = Progress(len(windows), "scored", enabled=progress)
    t0 = time.perf_counter()
    for b in range(0, len(windows), batch):
        chunk = windows[b:b + batch]
        x = np.zeros((batch, T), np.int32)
        y = np.zeros((batch, T), np.int32)
        m = np.zeros((batch, T), np.float32)
        for j, w in enumerate(chunk):
            x[j, :len(w) - 1], y[j, :len(w) - 1], m[j, :len(w) - 1] = w[:-1], w[1:], 1.0
        s = np.asarray(score(params, x, y, m))
        for j in range(len(chunk)):
            nll[owner[b + j]] += s[j]
            count[owner[b + j]] += m[j].sum()
        done = min(b + batch, len(windows))
        rate = done * T / max(time.perf_counter() - t0, 1e-9)
        bar.update(done, f"windows, {rate:,.0f} tok/s")
    bar.close()
    return nll, count


def teacher_scorer(run_dir: str | Path, *, progress: bool = False):
    """(vocabulary, ``score(docs) -> (summed NLL, tokens)``) of a run's latest checkpoint:
    what ``datalaws.data.store.add_syntheticity`` scores documents with."""
    model = load_model(run_dir)
    return model.c.vocab, lambda docs: document_nll(model, docs, progress=progress)
