"""`datalaws sweep plan|run`, `datalaws status`."""

from __future__ import annotations

import argparse

__all__ = ["register_cli"]


def _cmd_plan(a):
    from datalaws.launch.sweep import expand, load_spec

    runs = expand(load_spec(a.spec))
    total = 0.0
    for r in runs:
        c = r.config
        f = 6 * _params(c) * c["tokens"]
        total += f
        print(f"{r.run_id}  {c.get('preset'):>6}  {c['tokens']:>12,d} tok  {c.get('mixture')}")
    print(f"{len(runs)} runs, {total:.3g} FLOPs, {total / (989e12 * a.mfu) / 3600:.3g} "
          f"H100-hours at MFU {a.mfu}")
    return 0


def _params(c) -> int:
    from datalaws.model.transformer import ModelConfig, count_params

    return count_params(ModelConfig.preset(c["preset"], vocab=c.get("vocab", 1024)))[1]


def _cmd_run(a):
    from datalaws.launch.sweep import expand, load_spec, run_local

    codes = run_local(expand(load_spec(a.spec)), parallel=a.parallel,
                      retry_failed=a.retry_failed)
    bad = {k: v for k, v in codes.items() if v != 0}
    for k, v in bad.items():
        print(f"run {k} failed with exit code {v} (see its train.log)")
    return 1 if bad else 0


def _cmd_status(a):
    from datalaws.launch.sweep import expand, load_spec, status

    rows = status(expand(load_spec(a.spec)))
    for r in rows:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        print(f"{r['run_id']}  {r['state']:10s} step {r['step']:>6}  loss {loss:>8}  "
              f"{r['preset']:>6} {r['tokens']:>12,d} tok")
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="plan or run a sweep spec (TOML)")
    ssub = s.add_subparsers(dest="sweep_command", required=True)
    p = ssub.add_parser("plan", help="list runs, FLOPs and GPU-hours")
    p.add_argument("spec")
    p.add_argument("--mfu", type=float, default=0.45)
    p.set_defaults(func=_cmd_plan)
    r = ssub.add_parser("run", help="run the sweep locally (skips finished runs)")
    r.add_argument("spec")
    r.add_argument("--parallel", type=int, default=2)
    r.add_argument("--retry-failed", action="store_true")
    r.set_defaults(func=_cmd_run)
    st = sub.add_parser("status", help="every run of a sweep at a glance")
    st.add_argument("spec")
    st.set_defaults(func=_cmd_status)
