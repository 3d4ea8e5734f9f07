"""`datalaws train`: one training run from a TOML config and/or flags."""

from __future__ import annotations

import argparse

__all__ = ["register_cli", "run_from_dict"]


def run_from_dict(cfg: dict) -> int:
    """Train from a config dict (what sweeps write): flat keys (preset, tokens, data,
    mixture, out, ...) or ``RunConfig.to_dict``'s tables. Bad settings: one line each,
    before any work (see ``datalaws.model.config``)."""
    from datalaws.model.config import RunConfig
    from datalaws.model.run import train

    return train(RunConfig.from_dict(cfg))


def _cmd_train(a: argparse.Namespace) -> int:
    from datalaws.model.config import RunConfig
    from datalaws.model.run import train

    return train(RunConfig.from_args(a))


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
    from datalaws.data.cli import use_teacher  # `data quality` / `data synthesize` use runs

    use_teacher(scorer=_teacher_scorer, sampler=_teacher_sampler)


def _teacher_scorer(run_dir: str):
    from datalaws.model.score import teacher_scorer  # jax loads only when scoring

    return teacher_scorer(run_dir, progress=True)


def _teacher_sampler(run_dir: str):
    from datalaws.model.generate import teacher_sampler

    return teacher_sampler(run_dir)

