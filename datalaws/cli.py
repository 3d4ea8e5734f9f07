"""The `datalaws` command line: parses arguments and calls one library function per command.

Exit codes: 0 ok; 1 bad input or a failed command; 2 usage error (argparse);
3 a fit was written but its diagnostics failed (`fit`, without --allow-bad);
75 a training run was preempted (SIGTERM) and should be requeued (EX_TEMPFAIL).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from datalaws.exitcodes import EXIT_BAD_DIAGNOSTICS, EXIT_REQUEUE

__all__ = ["main", "EXIT_BAD_DIAGNOSTICS", "EXIT_REQUEUE"]


class UserError(Exception):
    """Bad input from the user: printed without a traceback, exit code 1."""


def _cmd_collect(a: argparse.Namespace) -> int:
    import warnings

    from datalaws.records import read_records

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = read_records(a.runs_dir, strict=a.strict)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    out = Path(a.out)
    _write_table(df, out)
    print(f"collected {len(df)} run records from {a.runs_dir} -> {out}"
          + (f" ({len(caught)} skipped)" if caught else ""))
    return 0


def _write_table(df, out: Path) -> None:
    from datalaws.records import atomic_write_text

    if out.suffix == ".parquet":
        import io

        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(out)
    elif out.suffix == ".csv":
        atomic_write_text(out, df.to_csv(index=False))
    else:
        raise UserError(f"--out {out}: use a .csv or .parquet file name")


def _cmd_env(a: argparse.Namespace) -> int:
    from datalaws.envinfo import describe_devices, package_versions

    for name, v in package_versions().items():
        print(f"{name:18s} {v}")
    import jax

    print(f"{'devices':18s} {describe_devices()}")
    for d in jax.devices():
        print(f"{'':18s} {d}")
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from datalaws.demo import run_demo

    run_demo(Path(a.out), fast=a.fast)
    return 0


def _cmd_plan(a: argparse.Namespace) -> int:
    import json

    from datalaws.fit.api import load_fit
    from datalaws.fit.plan import budget_from_gpu_hours, plan
    from datalaws.model.transformer import PRESETS, ModelConfig, count_params
    from datalaws.records import atomic_write_text

    result = load_fit(a.fit_dir)
    if result.law.name == "filtering":  # the budget is in samples seen: choose the pool
        from datalaws.fit.plan import pool_frontier

        if not a.pools or not a.tokens:
            raise UserError("a filtering-law plan needs --pools name=unique_tokens,... and "
                            "--tokens BUDGET[,BUDGET...] (tokens to train on)")
        pools = {k: float(v) for k, v in (x.split("=") for x in a.pools.split(","))}
        front = pool_frontier(result, [float(t) for t in a.tokens.split(",")], pools)
        print(front.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
        atomic_write_text(f"{a.fit_dir}/pool_frontier.csv", front.to_csv(index=False))
        return 0
    if not (a.budget or a.gpu_hours):
        raise UserError("give --budget FLOPS or --gpu-hours H")
    budget = a.budget if a.budget else budget_from_gpu_hours(a.gpu_hours, a.hardware, a.mfu)
    # the law's N is whatever the fitted table's N column counted: total params by default
    which = 1 if result.summary["columns"].get("N") == "params_nonembed" else 0
    sizes = {p: float(count_params(ModelConfig.preset(p, vocab=a.vocab))[which])
             for p in PRESETS if p not in ("tiny", "micro", "mini")}
    from datalaws.records import parse_mixture

    mixture = parse_mixture(a.mixture) if a.mixture else None
    evals = parse_mixture(a.evals) if a.evals else None
    p = plan(result, budget, objective=a.objective, sizes=sizes, unique_tokens=a.unique_tokens,
             metric=a.metric, mixture=mixture, evals=evals)
    cols = [c for c in p.candidates.columns if c != "score"]
    print(f"budget {budget:.3g} FLOPs, objective {a.objective} of {a.metric}; best candidates:")
    print(p.candidates[cols].head(10).fillna("-").to_string(
        index=False, float_format=lambda v: f"{v:.4g}"))
    for label, c in (("continuous best", p.continuous), ("plan (snapped to a preset)",
                                                         p.chosen)):
        print(f"\n{label}: {c['preset'] or '-'} ({c['params']:.3g} params), "
              f"{c['tokens']:.3g} tokens; {a.metric} median {c[a.metric + '_q50']:.4f} "
              f"[50%: {c[a.metric + '_q25']:.4f}-{c[a.metric + '_q75']:.4f}, "
              f"90%: {c[a.metric + '_q05']:.4f}-{c[a.metric + '_q95']:.4f}]", end="")
    print()
    d = p.default
    print(f"default (point-fit compute-optimal): {d['params']:.3g} params, {d['tokens']:.3g} "
          f"tokens; P(plan beats default) = {p.p_beats_default:.2f}")
    if mixture is not None:
        from datalaws.fit.mixture import best_mixture

        kind_q = None if a.objective == "mean" else int(a.objective[1:]) / 100
        best = best_mixture(result, params=p.chosen["params"], tokens=p.chosen["tokens"],
                            quantile=kind_q, default=mixture, evals=evals)
        print("best mixture at the plan: " + ", ".join(
            f"{k}={v:.3f}" for k, v in best["mixture"].items())
            + f"; P(beats --mixture) = {best['p_beats_default']:.2f}")
    print("\nlaunch it with a sweep spec containing:\n" + p.launch_snippet())
    atomic_write_text(f"{a.fit_dir}/plan.json", json.dumps(p.to_dict(), indent=1, default=str))
    print(f"wrote {a.fit_dir}/plan.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="datalaws",
        description="Data-aware scaling laws with calibrated posteriors: prepare data, "
                    "train sweeps, fit laws, plan compute.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    c = sub.add_parser("collect", help="gather run records into one table (.csv or .parquet)")
    c.add_argument("runs_dir", help="folder searched recursively for *.record.json")
    c.add_argument("--out", required=True, help="table.csv or table.parquet")
    c.add_argument("--strict", action="store_true", help="a malformed record is an error")
    c.set_defaults(func=_cmd_collect)

    e = sub.add_parser("env", help="versions of the stack and the JAX devices")
    e.set_defaults(func=_cmd_env)

    d = sub.add_parser("demo", help="the whole pipeline end to end on the embedded corpus")
    d.add_argument("--out", default="demo_out", help="output folder (reused on rerun)")
    d.add_argument("--fast", action="store_true", help="smaller token budgets")
    d.set_defaults(func=_cmd_demo)

    pl = sub.add_parser("plan", help="model size and tokens for a compute budget, with risk")
    pl.add_argument("fit_dir", help="a `datalaws fit` output folder")
    g = pl.add_mutually_exclusive_group()
    g.add_argument("--budget", type=float, help="FLOPs")
    g.add_argument("--gpu-hours", type=float)
    pl.add_argument("--hardware", default="h100")
    pl.add_argument("--mfu", type=float, default=0.45)
    pl.add_argument("--objective", default="mean",
                    help="mean, or qNN: a quantile of loss (q90 = risk-averse)")
    pl.add_argument("--metric", default="loss", help="loss or acc.<task> (needs a link)")
    pl.add_argument("--unique-tokens", type=float, help="unique tokens available")
    pl.add_argument("--mixture", help="current mixture domain=r,... (mixing-law fits)")
    pl.add_argument("--evals", help="validation composition domain=w,... whose loss to plan "
                    "for (per-domain mixing fits)")
    pl.add_argument("--pools", help="unique tokens per pool, hq=1e9,web=5e10 (filtering fits)")
    pl.add_argument("--tokens", help="token budgets, 1e9,1e10 (filtering fits)")
    pl.add_argument("--vocab", type=int, default=32768, help="vocabulary of the presets")
    pl.add_argument("--seq-len", type=int, default=2048)
    pl.set_defaults(func=_cmd_plan)

    for register in _extra_registrars():
        register(sub)
    return p


def _extra_registrars():
    """Subcommands owned by the subpackages (each module has `register_cli(subparsers)`)."""
    import importlib

    for mod in ("datalaws.fit.cli", "datalaws.model.cli", "datalaws.data.cli",
                "datalaws.launch.cli"):
        try:
            m = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name == mod:
                continue  # that part has not landed yet
            raise
        yield m.register_cli


def _host_devices_for_chains(n: int = 4) -> None:
    # NUTS chains run in parallel on host devices; XLA reads this flag once, at jax import.
    if "jax" not in sys.modules and "xla_force_host_platform_device_count" not in \
            os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={n}").strip()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("fit", "predict", "plan", "report", "demo", "nested"):
        _host_devices_for_chains()  # before the subcommand modules import jax
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
