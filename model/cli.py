"""`datalaws train`: one training run from a TOML config and/or flags."""

from __future__ import annotations

import argparse
import json
import tomllib
from pathlib import Path

from datalaws.records import parse_mixture

__all__ = ["register_cli", "run_from_dict"]


def run_from_dict(cfg: dict) -> int:
    """Train from a flat dict (what sweeps write): preset, tokens, data, mixture, out, ..."""
    from datalaws.data.store import open_domain
    from datalaws.model.train import TrainConfig, train
    from datalaws.model.transformer import ModelConfig

    required = {"preset", "tokens", "data", "out"}
    missing = required - set(cfg)
    if missing:
        raise ValueError(f"train config is missing {sorted(missing)}")
    mixture = cfg.get("mixture") or {}
    if isinstance(mixture, str):
        mixture = parse_mixture(mixture)
    elif mixture:  # a table from TOML/JSON: normalise away rounding
        total = sum(mixture.values())
        mixture = {k: float(v) / total for k, v in mixture.items()}
    if not mixture:
        raise ValueError("train config: give a --mixture (domain=proportion,...)")
    streams, valid, metas = {}, {}, {}
    for domain in mixture:
        tokens, meta = open_domain(cfg["data"], domain)
        # TensorStore views: the loader reads windows from the zarr store on demand, so a
        # run never holds a whole domain in memory. The last 5% of a domain is validation.
        cut = int(tokens.shape[0] * 0.95)
        streams[domain], metas[domain] = tokens[:cut], meta
        valid[domain] = tokens[cut:].translate_to[0]
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(f"{cfg['data']}/tokenizer.json").get_vocab_size()
    model = ModelConfig.preset(cfg["preset"], vocab=vocab, seq_len=int(cfg.get("seq_len", 128)),
                               attention=cfg.get("attention", "auto"),
                               dtype=cfg.get("dtype", "bfloat16"))
    c = TrainConfig(model=model, tokens=int(float(cfg["tokens"])), batch=int(cfg.get("batch", 8)),
                    lr=float(cfg.get("lr", 3e-3)), mixture=mixture, seed=int(cfg.get("seed", 0)),
                    run_id=cfg.get("run_id", "run"), save_every=int(cfg.get("save_every", 50)),
                    mesh=tuple(cfg.get("mesh", (1, 1, 1))),
                    unique_tokens=(int(float(cfg["unique_tokens"])) if cfg.get("unique_tokens")
                                   else None), grad_accum=int(cfg.get("grad_accum", 1)))
    quality = {"diversity": float(sum(r * metas[d]["diversity"] for d, r in mixture.items()))}
    syn = [metas[d].get("syntheticity") for d in mixture]
    if all(s is not None for s in syn):
        quality["syntheticity"] = float(sum(r * s for r, s in zip(mixture.values(), syn)))
    eod = next(iter(metas.values()))["eod"]
    eval_fn = None
    if cfg.get("tasks"):  # multiple-choice JSONL files -> acc.<task> in the record
        from datalaws.model.tasks import evaluate_tasks, load_task

        tok = Tokenizer.from_file(f"{cfg['data']}/tokenizer.json")
        tasks = {Path(p).stem: load_task(p) for p in cfg["tasks"]}

        def eval_fn(model):
            return evaluate_tasks(model, tasks, lambda s: tok.encode(s).ids)

    return train(c, streams, cfg["out"], eod=eod, valid=valid, quality=quality,
                 eval_fn=eval_fn)


def _cmd_train(a: argparse.Namespace) -> int:
    cfg = {}
    if a.config:
        with open(a.config, "rb") as f:
            cfg = tomllib.load(f)
    if a.config_json:
        cfg |= json.loads(a.config_json)
    for key in ("preset", "tokens", "data", "mixture", "out", "seq_len", "batch", "lr", "seed",
                "run_id", "unique_tokens", "attention", "tasks"):
        v = getattr(a, key)
        if v is not None:
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
    t.add_argument("--tasks", nargs="+", help="multiple-choice JSONL files to evaluate")
    t.set_defaults(func=_cmd_train)


