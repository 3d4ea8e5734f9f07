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

    from datalaws.fit.table import validate_table
    from datalaws.io import TABLE_SUFFIXES, check_output_file, write_table
    from datalaws.records import read_records

    out = check_output_file(a.out, force=a.force, suffixes=TABLE_SUFFIXES)
    curves_out = (check_output_file(a.curves, force=a.force, suffixes=TABLE_SUFFIXES)
                  if a.curves else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        df = read_records(a.runs_dir, strict=a.strict, mixed_validation=a.mixed_validation)
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    if df.empty:
        raise UserError(f"{a.runs_dir}: no readable run records (*.record.json) found")
    validate_table(df, source=f"records in {a.runs_dir}")  # string losses, duplicate ids...
    write_table(df, out)
    print(f"collected {len(df)} run records from {a.runs_dir} -> {out}"
          + (f" ({len(caught)} skipped)" if caught else ""))
    if curves_out is not None:  # one row per (run, validation step): `datalaws nested` input
        from datalaws.records import read_curves

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # already reported above
            curves = read_curves(a.runs_dir, mixed_validation=a.mixed_validation)
        if curves.empty:
            raise UserError(f"{a.runs_dir}: no finished run logged validation curves "
                            "(eval_every > 0)")
        write_table(curves, curves_out)
        print(f"validation curves: {len(curves)} points of {curves.run_id.nunique()} runs "
              f"-> {curves_out}")
    return 0


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

    if Path(a.out).exists() and not Path(a.out).is_dir():
        raise UserError(f"--out {a.out}: is a file; give a folder (reused on rerun)")
    run_demo(Path(a.out), fast=a.fast)
    return 0


def preset_sizes(n_column: str | None, vocab: int) -> dict[str, float]:
    """Each model preset's size as the fitted table counted N (total params by default)."""
    from datalaws.model.transformer import PRESETS, ModelConfig, count_params

    which = 1 if n_column == "params_nonembed" else 0
    return {p: float(count_params(ModelConfig.preset(p, vocab=vocab))[which]) for p in PRESETS}


def _plan_filtering(a: argparse.Namespace, result) -> int:
    """Budgets in samples seen: how much to filter (the best filtering level per budget)."""
    from datalaws.fit.filtering import parse_pools, plan_filtering, plan_lines
    from datalaws.io import check_output_file
    from datalaws.records import atomic_write_text

    if not a.pools or not a.tokens:
        raise UserError("a filtering-law plan needs --pools name=unique_samples,... (best "
                        "first) and --tokens BUDGET[,BUDGET...] (samples or tokens seen)")
    target = None if a.out is None else check_output_file(
        a.out, force=True, flag="--out", suffixes=(".csv", ".json"))
    budgets = list(_numbers(a.tokens, "--tokens").values())
    fp = plan_filtering(result, budgets, parse_pools(a.pools))
    print("\n".join(plan_lines(fp)))
    if target is None:
        print("nothing written (give --out FILE.csv or FILE.json to keep the table)")
    else:
        atomic_write_text(target, fp.to_json() if target.suffix == ".json" else fp.to_csv())
        print(f"wrote {target}")
    return 0


def _print_plan(p, budget: float, objective: str, metric: str) -> None:
    t = p.trust
    print(f"allowed sizes {t['min_params']:.3g}-{t['max_params']:.3g} parameters ({t['rule']}; "
          f"trained {t['trained_min_params']:.3g}-{t['trained_max_params']:.3g})")
    cols = [c for c in p.candidates.columns if c != "score"]
    print(f"budget {budget:.3g} FLOPs, objective {objective} of {metric}; best candidates:")
    print(p.candidates[cols].head(10).fillna("-").to_string(
        index=False, float_format=lambda v: f"{v:.4g}"))
    for label, c in (("continuous best", p.continuous), ("plan (snapped to a preset)",
                                                         p.chosen)):
        print(f"\n{label}: {c['preset'] or '-'} ({c['params']:.3g} params), "
              f"{c['tokens']:.3g} tokens; {metric} median {c[metric + '_q50']:.4f} "
              f"[50%: {c[metric + '_q25']:.4f}-{c[metric + '_q75']:.4f}, "
              f"90%: {c[metric + '_q05']:.4f}-{c[metric + '_q95']:.4f}]", end="")
    print()
    d = p.default
    print(f"default (point-fit compute-optimal): {d['params']:.3g} params, {d['tokens']:.3g} "
          f"tokens; P(plan beats default) = {p.p_beats_default:.2f}")
    print(f"why: {p.why}")
    for w in p.warnings:
        print(f"warning: {w}")


def _cmd_plan(a: argparse.Namespace) -> int:
    from datalaws.fit.plan import budget_from_gpu_hours, plan_fit
    from datalaws.fit.result import Fit
    from datalaws.io import check_output_file, dumps_json

    _check_budget(a)
    out = check_output_file(Path(a.fit_dir) / "plan.json", force=True, flag="plan")
    result = Fit.load(a.fit_dir)
    if result.law.pools:  # the filtering law: plan over pools, not sizes
        return _plan_filtering(a, result)
    # plan.json stays in the fit folder (the report's decision card reads it); --out copies it
    copy = None if a.out is None else check_output_file(a.out, force=True, flag="--out",
                                                         suffixes=(".json",))
    if result.law.domains and not result.law.sizes:  # one-size mixing fit: the mixture only
        from datalaws.fit.mixture import mixture_line, plan_mixture_only
        from datalaws.records import parse_mixture

        mp = plan_mixture_only(result, mixture=parse_mixture(a.mixture) if a.mixture else None,
                               evals=parse_mixture(a.evals) if a.evals else None,
                               objective=a.objective)
        print(mixture_line(mp["mixture"]) + f"\n({mp['note']})")
        _write_plan(dumps_json(mp, indent=1, default=str), out, copy)
        return 0
    if not (a.budget or a.gpu_hours):
        raise UserError("give --budget FLOPS or --gpu-hours H")
    budget = a.budget if a.budget else budget_from_gpu_hours(
        a.gpu_hours, a.hardware or DEFAULT_HARDWARE, DEFAULT_MFU if a.mfu is None else a.mfu)
    sizes = preset_sizes(result.columns.get("N"), a.vocab)
    from datalaws.records import parse_mixture

    p = plan_fit(result, budget, objective=a.objective, sizes=sizes,
                 unique_tokens=a.unique_tokens, metric=a.metric,
                 mixture=parse_mixture(a.mixture) if a.mixture else None,
                 evals=parse_mixture(a.evals) if a.evals else None,
                 min_params=a.min_params, max_params=a.max_params)
    _print_plan(p, budget, a.objective, a.metric)
    if p.mixture is not None:  # the decision card shows it too
        best = p.mixture
        print("best mixture at the plan: " + ", ".join(
            f"{k}={v:.3f}" for k, v in best["mixture"].items())
            + f"; P(beats --mixture) = {best['p_beats_default']:.2f}"
            + (f"; P(beats the runner-up) = {best['p_beats_runner_up']:.2f}"
               if "p_beats_runner_up" in best else ""))
    print("\nlaunch it with a sweep spec containing:\n" + p.launch_snippet())
    _write_plan(dumps_json(p.to_dict(), indent=1, default=str), out, copy)
    return 0


def _write_plan(text: str, out: Path, copy: Path | None) -> None:
    from datalaws.records import atomic_write_text

    for dest in (out, copy) if copy else (out,):
        atomic_write_text(dest, text)
        print(f"wrote {dest}")


# A plan is only as good as the presets it snaps to and the runs the law saw: a budget that
# cannot train the smallest plannable preset on one token per parameter, or beyond any
# training run ever made, is a typo (1e12 for 1e21, 1e30), not a question worth sampling.
MAX_BUDGET = 1e27
DEFAULT_HARDWARE, DEFAULT_MFU = "h100", 0.45  # what --gpu-hours converts at unless told


def _check_budget(a: argparse.Namespace) -> None:
    import math

    for flag, v in (("--budget", a.budget), ("--gpu-hours", a.gpu_hours), ("--mfu", a.mfu),
                    ("--unique-tokens", a.unique_tokens), ("--min-params", a.min_params),
                    ("--max-params", a.max_params)):
        if v is not None and (not math.isfinite(v) or v <= 0):
            raise UserError(f"{flag} {v}: must be a positive finite number")
    if a.mfu is not None and a.mfu > 1:
        raise UserError(f"--mfu {a.mfu}: a fraction of peak, at most 1")
    if a.budget is None:
        return
    if a.hardware is not None or a.mfu is not None:  # silently unused would mislead
        raise UserError("--hardware and --mfu turn --gpu-hours into FLOPs; with --budget "
                        "they are not used, so drop them")
    from datalaws.model.transformer import PRESETS, ModelConfig, count_params

    smallest = min(float(count_params(ModelConfig.preset(p, vocab=a.vocab))[0])
                   for p in PRESETS if p not in ("tiny", "micro", "mini"))
    if a.budget < 6 * smallest * smallest:
        raise UserError(f"--budget {a.budget:.3g}: below {6 * smallest ** 2:.3g} FLOPs, which "
                        f"trains the smallest plannable preset ({smallest:.3g} params) on only "
                        "one token per parameter")
    if a.budget > MAX_BUDGET:
        raise UserError(f"--budget {a.budget:.3g}: above {MAX_BUDGET:.0e} FLOPs, beyond any "
                        "training run; check the exponent")


def _numbers(text: str, flag: str, *, named: bool = False) -> dict[str, float]:
    """``1e9,1e10`` or (``named``) ``hq=1e9,web=5e10`` -> positive finite floats."""
    import math

    out = {}
    for i, item in enumerate(text.split(",")):
        key, _, val = item.rpartition("=") if named else ("", "", item)
        if named and not key.strip():
            raise UserError(f"{flag} {text!r}: write name=number,... ({item!r})")
        try:
            x = float(val)
        except ValueError:
            raise UserError(f"{flag} {text!r}: {val!r} is not a number") from None
        if not math.isfinite(x) or x <= 0:
            raise UserError(f"{flag} {text!r}: {val!r} must be a positive finite number")
        out[key.strip() if named else str(i)] = x
    return out


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
    c.add_argument("--force", action="store_true", help="overwrite an existing --out")
    c.add_argument("--curves", metavar="CURVES_OUT", help="also write the validation curves, "
                   "one row per (run, step): the table `datalaws nested` fits")
    c.add_argument("--mixed-validation", action="store_true",
                   help="keep runs evaluated on different validation sets (not comparable)")
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
    pl.add_argument("--hardware", help=f"with --gpu-hours (default {DEFAULT_HARDWARE})")
    pl.add_argument("--mfu", type=float, help=f"with --gpu-hours: the fraction of peak FLOPs "
                    f"reached (default {DEFAULT_MFU})")
    pl.add_argument("--objective", default="mean",
                    help="mean, or qNN: a quantile of loss (q90 = risk-averse)")
    pl.add_argument("--metric", default="loss", help="loss or acc.<task> (needs a link)")
    pl.add_argument("--unique-tokens", type=float, help="unique tokens available")
    pl.add_argument("--mixture", help="current mixture domain=r,... (mixing-law fits)")
    pl.add_argument("--evals", help="validation composition domain=w,... whose loss to plan "
                    "for (per-domain mixing fits)")
    pl.add_argument("--pools", help="filtering fits: unique samples per pool, best first, "
                    "top10=1.28e7,top20=1.28e7 (level k = the k best pools)")
    pl.add_argument("--tokens", help="filtering fits: budgets in samples or tokens seen, 1e9,1e10")
    pl.add_argument("--out", help="also write the plan here (.json; filtering fits: the "
                    "levels table, .csv or .json); plan.json in the fit folder is always kept")
    pl.add_argument("--vocab", type=int, default=32768, help="vocabulary of the presets")
    pl.add_argument("--seq-len", type=int, default=2048)
    pl.add_argument("--min-params", type=float, help="smallest size to consider (default: "
                    "the smallest trained size)")
    pl.add_argument("--max-params", type=float, help="largest size to consider (default: "
                    "100x the largest trained size)")
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


# Commands that only fit, predict from or plan with laws: tiny models whose NUTS steps are
# latency-bound, so a GPU slows them. On an H200 machine the same Chinchilla fit took 60 s on
# the GPU and 14 s on its CPU (with the backtest folds: 112 s and 36 s). Not `demo`: it
# trains models too.
FIT_COMMANDS = ("fit", "predict", "plan", "report", "nested", "next", "compare")


def _host_devices_for_chains(n: int = 4) -> None:
    # NUTS chains run in parallel on host devices; XLA reads the count once, when jax starts
    # its CPU backend (so only before jax is imported here); a count the user set wins
    if "jax" not in sys.modules and "xla_force_host_platform_device_count" not in \
            os.environ.get("XLA_FLAGS", ""):
        import numpyro

        numpyro.set_host_device_count(n)


def _fits_on_the_cpu() -> None:
    # JAX picks its platform once, when it is first imported; a platform the user set wins
    if "jax" not in sys.modules:
        os.environ.setdefault("JAX_PLATFORMS", "cpu")


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that temporary outputs are cleaned up the same way."""


def _on_sigterm(signum, frame) -> None:
    raise _Terminated()


def _one_line(e: BaseException) -> str:
    text = "; ".join(x.strip() for x in str(e).splitlines() if x.strip())
    return text or type(e).__name__


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as e:
        # train saves its own checkpoint on SIGINT/SIGTERM inside the loop; any other command
        # (or train before its first step) has written nothing partial: temp files are gone
        sig = "SIGTERM" if isinstance(e, _Terminated) else "SIGINT"
        sub = getattr(args, f"{args.command}_command", None)
        name = f"{args.command} {sub}" if sub else args.command
        print(f"interrupted ({sig}): datalaws {name} stopped; nothing partial was written "
              "and earlier outputs are unchanged", file=sys.stderr)
        return EXIT_REQUEUE if sig == "SIGTERM" and args.command == "train" else 130
    except (UserError, ValueError, OSError) as e:  # TableError, StoreError, OutputError, ...
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # ours (SlurmError, ...) are bad input or a failed service
        if not type(e).__module__.startswith("datalaws"):
            raise
        print(f"error: {_one_line(e)}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    import signal
    import threading

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in FIT_COMMANDS:
        _fits_on_the_cpu()  # before the subcommand modules import jax
    if argv and argv[0] in (*FIT_COMMANDS, "demo"):
        _host_devices_for_chains()
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
    try:
        return _run(args)
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)


if __name__ == "__main__":
    sys.exit(main())
