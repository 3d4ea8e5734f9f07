"""The one training entry: ``train(config)`` runs a ``RunConfig`` end to end.

Local runs (`datalaws train`), sweeps (local, SLURM and TPU tasks run `datalaws train`),
the demo's teacher all come here. It opens the store's streams of the mixture and the
validation streams of every domain, resolves the evaluation composition (the store's
default unless the config declares one), loads the multiple-choice tasks, and hands the
``TrainConfig`` to the training loop (``datalaws.model.train.train``); the run record
stores ``config.to_dict()``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path

from datalaws.model.config import ConfigError, RunConfig

__all__ = ["train", "check_run"]


def check_run(config: RunConfig) -> None:
    """Refuse before any work: a W&B run without the package, an --out that is a file or
    a finished run (one line each)."""
    from datalaws.model.resume import check_run_dir

    if config.logging.wandb:
        from datalaws.model.metrics import require_wandb

        require_wandb()
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file, not a run folder")
    if out.is_dir():
        check_run_dir(out, {}, lambda: None)  # a finished run: refuse (config: in train)


def train(config: RunConfig, *, progress: bool = True, stop_after: int | None = None) -> int:
    """Train the run ``config`` describes and write its record. Returns an exit code."""
    from tokenizers import Tokenizer

    from datalaws.model.train import train as train_loop

    check_run(config)
    streams, valid, metas, validation, eval_mix = _store_data(config)
    c = dataclasses.replace(config.train, eval_mix=eval_mix)
    mixture = dict(c.mixture)
    quality = {"diversity": float(sum(r * metas[d]["diversity"] for d, r in mixture.items()))}
    syn = [metas[d].get("syntheticity") for d in mixture]
    if all(s is not None for s in syn):
        quality["syntheticity"] = float(sum(r * s for r, s in zip(mixture.values(), syn)))
    eod = next(iter(metas.values()))["eod"]
    tok = Tokenizer.from_file(f"{config.data.store}/tokenizer.json")
    eval_fn, chance = _tasks(config, lambda s: tok.encode(s).ids)
    return train_loop(c, streams, config.out, eod=eod, valid=valid, quality=quality,
                      eval_fn=eval_fn, profile_steps=config.logging.profile_steps,
                      wandb=config.logging.wandb, validation=validation, chance=chance,
                      progress=progress, stop_after=stop_after, record_config=config.to_dict())


def _tasks(config: RunConfig, encode):
    """Multiple-choice tasks -> acc.<task> and chance.<task> in the record: the given JSONL
    files, else the store's built-in next-line tasks (made from its validation documents)."""
    from datalaws.model.tasks import chance as chance_of
    from datalaws.model.tasks import evaluate_tasks, load_task, store_tasks

    tasks = ({Path(p).stem: load_task(p) for p in config.data.tasks} if config.data.tasks
             else store_tasks(config.data.store))
    if not tasks:
        return None, None
    chance = {n: chance_of(items) for name, items in tasks.items()
              for n in (name, f"{name}_norm")}
    return (lambda model: evaluate_tasks(model, tasks, encode)), chance


def _store_data(config: RunConfig):
    """Training streams of the mixture, validation streams of every domain of the store, the
    store's validation identity and the evaluation composition (``eval_mix``: given, else
    the store's default, each base domain weighted by its share of tokens)."""
    from datalaws.data.store import open_domain, store_validation

    store, mixture = config.data.store, config.train.mixture
    validation = store_validation(store)
    splits = validation["domains"]
    missing = sorted(set(mixture) - set(splits))
    if missing:
        raise ConfigError(f"mixture names domain(s) {missing} that the store {store} "
                          f"lacks; it has {sorted(splits)}")
    eval_mix = _normalise(config.train.eval_mix or validation["default_eval"])
    unknown = sorted(set(eval_mix) - set(splits))
    if unknown:
        raise ConfigError(f"eval_mix names domain(s) {unknown} that the store {store} "
                          f"lacks; it has {sorted(splits)}")
    streams, valid, metas = {}, {}, {}
    for domain, split in splits.items():
        tokens, meta = open_domain(store, domain)
        # TensorStore views: the loader reads windows from the zarr store on demand, so a
        # run never holds a whole domain in memory; [start:] is the fixed validation split
        valid[domain] = tokens[split["start"]:].translate_to[0]
        if domain in mixture:
            streams[domain], metas[domain] = tokens[:split["start"]], meta
    return streams, valid, metas, validation, eval_mix


def _normalise(mix: Mapping) -> dict[str, float]:
    total = sum(float(v) for v in mix.values())
    if total <= 0 or min(float(v) for v in mix.values()) < 0:
        raise ConfigError(f"composition {dict(mix)}: weights must be >= 0 with a positive sum")
    return {k: float(v) / total for k, v in sorted(mix.items())}
