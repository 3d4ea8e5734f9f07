"""`datalaws sweep plan|run`, `datalaws status`."""

from __future__ import annotations

import argparse
import sys

__all__ = ["register_cli"]


def _cmd_plan(a):
    from datalaws.hardware import PEAK_BF16
    from datalaws.launch.sweep import expand, load_spec, plan_runs

    if not 0 < a.mfu <= 1:  # before any work: 0 divided by zero, above 1 is no fraction
        raise ValueError(f"--mfu {a.mfu}: a fraction of peak in (0, 1]")
    runs = expand(load_spec(a.spec))
    rows, notes = plan_runs(runs)  # the numbers `train` and the run records use
    for r in rows:
        print(f"{r['run_id']}  {r['preset']:>6}  {r['tokens']:>12,d} tok  "
              f"{r['flops_per_token']:.4g} FLOPs/tok  {r['mixture']}")
    total = sum(r["flops"] for r in rows)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{len(runs)} runs, {total:.3g} FLOPs, "
          f"{total / (PEAK_BF16['h100'] * a.mfu) / 3600:.3g} H100-hours at MFU {a.mfu}")
    return _check_topology(runs, a.topology) if a.topology else 0


def _check_topology(runs, topology: str) -> int:
    """Compile every distinct step for the topology; refuse (exit 1) if one does not fit."""
    from datalaws.launch.sweep import preflight_runs
    from datalaws.model.preflight import fits, format_report

    results = preflight_runs(runs, topology)
    for r in results:
        print(format_report(r))
    bad = [r for r in results if not fits(r)]
    for r in bad:
        print(f"refused: {r['preset']} batch {r['batch']}x{r['seq_len']} needs "
              f"{r['memory']['peak'] / 2**30:.1f} GiB per device, {topology} has "
              f"{r['hbm_bytes'] / 2**30:.1f} GiB ({len(r['runs'])} runs); use grad_accum, "
              "remat = \"dots\" or a larger mesh", file=sys.stderr)
    return 1 if bad else 0


def _cmd_run(a):
    from pathlib import Path

    from datalaws.launch.sweep import expand, load_spec, run_local

    spec = load_spec(a.spec)
    runs = expand(spec)
    executor = a.executor or spec.get("executor", "local")
    if executor == "slurm":
        import dataclasses

        from datalaws.launch.slurm import SlurmProfile, submit

        known = {f.name for f in dataclasses.fields(SlurmProfile)}
        unknown = sorted(set(spec.get("slurm", {})) - known)
        if unknown:
            raise ValueError(f"{a.spec}: [slurm] has unknown key(s) {unknown}; known: "
                             f"{sorted(known)}")
        profile = SlurmProfile(**{k: tuple(v) if isinstance(v, list) else v
                                  for k, v in spec.get("slurm", {}).items()})
        job = submit(runs, profile, Path(spec["out"]), retry_failed=a.retry_failed,
                     compile_cache=Path(spec["out"]) / "jax_cache")
        print(f"submitted array job {job}" if job else
              "nothing to submit: every run is finished, queued or running (or failed; "
              "--retry-failed resubmits those)")
        return 0
    if executor == "tpu":
        from datalaws.launch.tpu import TpuProfile, write_tpu_script

        if "tpu" not in spec:
            raise ValueError(f"{a.spec}: the tpu executor needs a [tpu] table (name, zone)")
        script = write_tpu_script(runs, TpuProfile(**spec["tpu"]), Path(spec["out"]))
        print(f"wrote {script}: run it where gcloud reaches the TPU VM")
        return 0
    if executor != "local":
        raise ValueError(f"executor {executor!r}: use local, slurm or tpu")
    codes = run_local(runs, parallel=a.parallel, retry_failed=a.retry_failed,
                      compile_cache=Path(spec["out"]) / "jax_cache")
    bad = {k: v for k, v in codes.items() if v != 0}
    for k, v in bad.items():
        print(f"run {k} failed with exit code {v} (see its train.log)")
    return 1 if bad else 0


def _cmd_status(a):
    from pathlib import Path

    from datalaws.launch.sweep import expand, load_spec, status

    spec = load_spec(a.spec)
    queued, ended = {}, {}
    if (Path(spec["out"]) / "slurm" / "submissions.json").exists():
        from datalaws.launch.slurm import ALIVE, task_states

        for rid, t in task_states(spec["out"]).items():
            (queued if t["state"] in ALIVE else ended)[rid] = t
    rows = status(expand(spec), queued)
    for r in rows:  # a task SLURM ended (timeout, out of memory, node failure) left no record
        t = ended.get(r["run_id"])
        if t and r["state"] in ("pending", "partial") and t["state"] != "COMPLETED":
            r.update(slurm=t["state"], job=t["job"], task=t["task"])
            if r["state"] == "pending":  # it never wrote a step: it did not start properly
                r["state"] = "failed"
    for r in rows:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "-"
        job = f"  job {r['job']}_{r['task']}" if "job" in r else ""
        code = (f" (exit {r['exit_code']})" if "exit_code" in r else
                f" ({r['slurm']})" if "slurm" in r else "")
        eta = f"  ETA {r['eta_s']:.0f} s" if "eta_s" in r else ""
        print(f"{r['run_id']}  {r['state'] + code:12s} step {r['step']:>6}/{r['steps']:<6} "
              f"loss {loss:>8}  {r['preset']:>6} {r['tokens']:>12,d} tok{job}{eta}")
    counts = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    if a.curves:
        _show_curves(spec, {r["run_id"]: r["state"] for r in rows}, a.curves)
    return 0


def _show_curves(spec: dict, states: dict, where: str) -> None:
    from datalaws.launch.curves import plot_curves, print_curves, sweep_curves
    from datalaws.launch.sweep import expand

    if where != "-":  # a PNG is rewritten on every call: --force would be noise
        from datalaws.io import check_output_file

        check_output_file(where, force=True, flag="--curves", suffixes=(".png",))
    curves = sweep_curves(expand(spec), states)
    if where == "-":
        print()
        print_curves(curves)
    else:
        print(f"validation curves of {curves.run_id.nunique() if len(curves) else 0} runs -> "
              f"{plot_curves(curves, where)}")


def _cmd_tensorboard(a):
    from pathlib import Path

    from datalaws.launch.curves import tensorboard_command
    from datalaws.launch.sweep import expand, load_spec

    spec = load_spec(a.spec)
    runs = expand(spec)
    logged = sum(any(r.out.glob("events.out.tfevents.*")) for r in runs if r.out.is_dir())
    print(f"{logged} of {len(runs)} runs have TensorBoard event files so far", file=sys.stderr)
    print(tensorboard_command(Path(spec["out"])))
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="plan or run a sweep spec (TOML)")
    ssub = s.add_subparsers(dest="sweep_command", required=True)
    p = ssub.add_parser("plan", help="list runs, FLOPs and GPU-hours")
    p.add_argument("spec")
    p.add_argument("--mfu", type=float, default=0.45)
    p.add_argument("--topology", help="compile each run's step for this TPU/GPU topology "
                   "(v5e:2x2, v5p:2x2x4, h100x8, ...) and refuse the sweep if one does not fit")
    p.set_defaults(func=_cmd_plan)
    r = ssub.add_parser("run", help="run the sweep locally (skips finished runs)")
    r.add_argument("spec")
    r.add_argument("--parallel", type=int, default=2, help="local: runs at once")
    r.add_argument("--executor", choices=["local", "slurm", "tpu"],
                   help="default: the spec's `executor`, else local")
    r.add_argument("--retry-failed", action="store_true")
    r.set_defaults(func=_cmd_run)
    st = sub.add_parser("status", help="every run of a sweep at a glance")
    st.add_argument("spec")
    st.add_argument("--curves", nargs="?", const="-", metavar="PNG",
                    help="also the validation curves of every run so far (text, or a PNG)")
    st.set_defaults(func=_cmd_status)
    tb = sub.add_parser("tensorboard", help="print the command that opens TensorBoard over "
                        "a sweep's runs")
    tb.add_argument("spec")
    tb.set_defaults(func=_cmd_tensorboard)
