"""`datalaws train`: one training run from a TOML config and/or flags."""

from __future__ import annotations

import argparse
import dataclasses
import json
import tomllib
from pathlib import Path

from datalaws.records import parse_mixture

__all__ = ["register_cli", "run_from_dict"]


def run_from_dict(cfg: dict) -> int:
    """Train from a flat dict (what sweeps write): preset, tokens, data, mixture, out, ..."""
    from datalaws.model.train import TrainConfig, train
    from datalaws.model.transformer import ModelConfig

    required = {"preset", "tokens", "data", "out"}
    missing = required - set(cfg)
    if missing:
        raise ValueError(f"train config is missing {sorted(missing)}")
    from datalaws.model.metrics import parse_profile_steps, require_wandb

    profile_steps = parse_profile_steps(cfg.get("profile_steps"))  # bad input: fail first
    _check_config(cfg)  # numbers, preset, store and run folder: refuse before any work
    if cfg.get("wandb"):
        require_wandb()
    mixture = cfg.get("mixture") or {}
    if isinstance(mixture, str):
        mixture = parse_mixture(mixture)
    elif mixture:  # a table from TOML/JSON: normalise away rounding
        total = sum(mixture.values())
        mixture = {k: float(v) / total for k, v in mixture.items()}
    if not mixture:
        raise ValueError("train config: give a --mixture (domain=proportion,...)")
    streams, valid, metas, validation, eval_mix = _store_data(cfg, mixture)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(f"{cfg['data']}/tokenizer.json").get_vocab_size()
    model = ModelConfig.preset(cfg["preset"], vocab=vocab, seq_len=int(cfg.get("seq_len", 128)),
                               attention=cfg.get("attention", "auto"),
                               dtype=cfg.get("dtype", "bfloat16"),
                               remat=_remat(cfg.get("remat", False)))
    c = TrainConfig(model=model, tokens=int(float(cfg["tokens"])), batch=int(cfg.get("batch", 8)),
                    lr=float(cfg.get("lr", 3e-3)), mixture=mixture, seed=int(cfg.get("seed", 0)),
                    run_id=cfg.get("run_id", "run"), save_every=int(cfg.get("save_every", 50)),
                    mesh=_mesh(cfg.get("mesh")),  # None: fsdp over all devices
                    unique_tokens=(int(float(cfg["unique_tokens"])) if cfg.get("unique_tokens")
                                   else None), grad_accum=int(cfg.get("grad_accum", 1)),
                    eval_mix=eval_mix, **_eval_and_schedule(cfg))
    if cfg.get("log_every") is not None:
        c = dataclasses.replace(c, log_every=int(cfg["log_every"]))
    quality = {"diversity": float(sum(r * metas[d]["diversity"] for d, r in mixture.items()))}
    syn = [metas[d].get("syntheticity") for d in mixture]
    if all(s is not None for s in syn):
        quality["syntheticity"] = float(sum(r * s for r, s in zip(mixture.values(), syn)))
    eod = next(iter(metas.values()))["eod"]
    # multiple-choice tasks -> acc.<task> and chance.<task> in the record: the given JSONL
    # files, else the store's built-in next-line tasks (made from its validation documents)
    from datalaws.model.tasks import chance as chance_of
    from datalaws.model.tasks import evaluate_tasks, load_task, store_tasks

    tok = Tokenizer.from_file(f"{cfg['data']}/tokenizer.json")
    tasks = ({Path(p).stem: load_task(p) for p in cfg["tasks"]} if cfg.get("tasks")
             else store_tasks(cfg["data"]))
    chance = {n: chance_of(items) for name, items in tasks.items()
              for n in (name, f"{name}_norm")}

    def eval_fn(model):
        return evaluate_tasks(model, tasks, lambda s: tok.encode(s).ids)

    return train(c, streams, cfg["out"], eod=eod, valid=valid, quality=quality,
                 eval_fn=eval_fn if tasks else None, profile_steps=profile_steps,
                 wandb=bool(cfg.get("wandb")), validation=validation,
                 chance=chance if tasks else None)


_POSITIVE = {"tokens": float, "batch": int, "seq_len": int, "lr": float, "save_every": int,
             "grad_accum": int, "unique_tokens": float, "log_every": int}


def _check_config(cfg: dict) -> None:
    """One line naming the setting: bad numbers, unknown preset, missing store, an --out that
    is a file or a finished run (nothing is read or compiled before this passes)."""
    import math

    from datalaws.model.resume import check_run_dir
    from datalaws.model.transformer import PRESETS

    if cfg["preset"] not in PRESETS:
        raise ValueError(f"preset {cfg['preset']!r}: unknown; presets are {', '.join(PRESETS)}")
    for key, kind in _POSITIVE.items():
        if cfg.get(key) is None:
            continue
        try:
            v = float(cfg[key])
        except (TypeError, ValueError):
            raise ValueError(f"{key} = {cfg[key]!r}: not a number") from None
        if not math.isfinite(v) or v <= 0 or (kind is int and v != int(v)):
            raise ValueError(f"{key} = {cfg[key]!r}: must be a positive "
                             f"{'whole number' if kind is int else 'number'}")
    if cfg.get("seed") is not None and not str(cfg["seed"]).lstrip("-").isdigit():
        raise ValueError(f"seed = {cfg['seed']!r}: must be a whole number")
    mix = cfg.get("mixture")
    if isinstance(mix, dict):
        for k, v in mix.items():
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"mixture {k} = {v!r}: proportions are numbers >= 0")
    store = Path(cfg["data"])
    if not (store / "tokenizer.json").is_file():
        raise ValueError(f"--data {store}: not a token store (no tokenizer.json); make one with "
                         "`datalaws data prepare`")
    out = Path(cfg["out"])
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: is a file, not a run folder")
    if out.is_dir():
        check_run_dir(out, {}, lambda: None)  # a finished run: refuse (config: in train)


def _store_data(cfg: dict, mixture: dict[str, float]):
    """Training streams of the mixture, validation streams of every domain of the store, the
    store's validation identity and the evaluation composition (``eval_mix``: given, else
    the store's default, each base domain weighted by its share of tokens)."""
    from datalaws.data.store import open_domain, store_validation

    validation = store_validation(cfg["data"])
    splits = validation["domains"]
    missing = sorted(set(mixture) - set(splits))
    if missing:
        raise ValueError(f"mixture names domain(s) {missing} that the store {cfg['data']} "
                         f"lacks; it has {sorted(splits)}")
    eval_mix = cfg.get("eval_mix") or validation["default_eval"]
    eval_mix = parse_mixture(eval_mix) if isinstance(eval_mix, str) else _normalise(eval_mix)
    unknown = sorted(set(eval_mix) - set(splits))
    if unknown:
        raise ValueError(f"eval_mix names domain(s) {unknown} that the store {cfg['data']} "
                         f"lacks; it has {sorted(splits)}")
    streams, valid, metas = {}, {}, {}
    for domain, split in splits.items():
        tokens, meta = open_domain(cfg["data"], domain)
        # TensorStore views: the loader reads windows from the zarr store on demand, so a
        # run never holds a whole domain in memory; [start:] is the fixed validation split
        valid[domain] = tokens[split["start"]:].translate_to[0]
        if domain in mixture:
            streams[domain], metas[domain] = tokens[:split["start"]], meta
    return streams, valid, metas, validation, eval_mix


def _normalise(mix: dict) -> dict[str, float]:
    total = sum(float(v) for v in mix.values())
    if total <= 0 or min(float(v) for v in mix.values()) < 0:
        raise ValueError(f"composition {mix}: weights must be >= 0 with a positive sum")
    return {k: float(v) / total for k, v in sorted(mix.items())}


def _eval_and_schedule(cfg: dict) -> dict:
    """TrainConfig fields of evaluation and the schedule that the config sets."""
    kinds = {"eval_every": int, "eval_windows": int, "curve_windows": int, "schedule": str,
             "decay_frac": float, "warmup_frac": float, "min_lr_frac": float,
             "z_loss": float}
    return {k: f(cfg[k]) for k, f in kinds.items() if cfg.get(k) is not None}


def _cmd_train(a: argparse.Namespace) -> int:
    cfg = {}
    if a.config:
        try:
            with open(a.config, "rb") as f:
                cfg = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ValueError(f"{a.config}: invalid TOML ({e})") from None
    if a.config_json:
        try:
            cfg |= json.loads(a.config_json)
        except json.JSONDecodeError as e:
            raise ValueError(f"--config-json: invalid JSON ({e})") from None
    for key in ("preset", "tokens", "data", "mixture", "out", "seq_len", "batch", "lr", "seed",
                "run_id", "unique_tokens", "attention", "tasks", "mesh", "remat",
                "grad_accum"):
        v = getattr(a, key)
        if v is not None:
            cfg[key] = v
    for key in ("eval_mix", "eval_every", "schedule", "z_loss"):  # evaluation, schedule
        if getattr(a, key) is not None:
            cfg[key] = getattr(a, key)
    for key in ("log_every", "profile_steps", "wandb"):  # metrics and profiles
        v = getattr(a, key)
        if v is not None and v is not False:
            cfg[key] = v
    return run_from_dict(cfg)


def register_cli(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("train", help="train one model and write its RunRecord")
    t.add_argument("config", nargs="?", help="TOML config (flags override it)")
    t.add_argument("--config-json", help=argparse.SUPPRESS)
    t.add_argument("--preset")
    t.add_argument("--tokens", type=float)
    t.add_argument("--data", help="token store from `datalaws data prepare`")
    t.add_argument("--mixture", help="domain=proportion,... e.g. web=0.7,code=0.3")
    t.add_argument("--out", help="run directory")
    t.add_argument("--seq-len", dest="seq_len", type=int)
    t.add_argument("--batch", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--seed", type=int)
    t.add_argument("--run-id", dest="run_id")
    t.add_argument("--unique-tokens", dest="unique_tokens", type=float)
    t.add_argument("--attention", choices=["auto", "cudnn", "xla"])
    t.add_argument("--mesh", metavar="data=1,fsdp=-1,tensor=1",
                   help="device mesh (default: fsdp over all devices; -1 = the rest)")
    t.add_argument("--remat", choices=["none", "full", "dots"],
                   help="recompute activations in the backward pass (default none)")
    t.add_argument("--grad-accum", dest="grad_accum", type=int,
                   help="microbatches per optimizer step (default 1)")
    t.add_argument("--tasks", nargs="+", help="multiple-choice JSONL files to evaluate "
                   "(default: the store's built-in next-line tasks)")
    t.add_argument("--eval-mix", dest="eval_mix", metavar="DOMAIN=W,...",
                   help="composition of the run's `loss` over the store's validation domains "
                   "(default: each base domain weighted by its share of the store's tokens)")
    t.add_argument("--eval-every", dest="eval_every", type=int,
                   help="steps between validation-curve points (default 100; 0: off)")
    t.add_argument("--schedule", choices=["cosine", "wsd"], help="learning-rate schedule")
    t.add_argument("--z-loss", dest="z_loss", type=float, help="z-loss weight (default 0)")
    t.add_argument("--log-every", dest="log_every", type=int,
                   help="steps between TensorBoard writes and progress lines (default 10)")
    t.add_argument("--profile-steps", dest="profile_steps", metavar="FIRST:LAST",
                   help="write a JAX profiler trace of these steps (inclusive) into --out")
    t.add_argument("--wandb", action="store_true",
                   help="also log to Weights & Biases, offline (needs `pip install wandb`)")
    t.set_defaults(func=_cmd_train)
    from datalaws.model.preflight import register_cli as register_preflight

    register_preflight(sub)


def _mesh(v):
    from datalaws.model.sharding import parse_mesh  # jax loads only when training

    return parse_mesh(v)


def _remat(v) -> bool | str:
    return {"none": False, "false": False, "true": True}.get(str(v).lower(), v)


