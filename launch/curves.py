"""A sweep at a glance: the validation curves of every run so far, and TensorBoard over them.

Runs log a validation point every ``eval_every`` steps into their metrics.jsonl (``eval``:
loss per domain, ``eval_loss``: the declared composition). ``sweep_curves`` gathers them for
all runs of a sweep, finished or still running; ``print_curves`` writes them as text and
``plot_curves`` as a PNG (one panel for the composition, one per domain).
"""

from __future__ import annotations

import io
import math
import shlex
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import pandas as pd

from datalaws.io import atomic_write_bytes, read_jsonl
from datalaws.launch.sweep import Run

__all__ = ["sweep_curves", "print_curves", "plot_curves", "tensorboard_command"]

_MAX_POINTS = 8  # points per run in the text view (evenly spaced, always the last)
_MAX_DOMAIN_PANELS = 8


def sweep_curves(runs: Iterable[Run], states: Mapping[str, str] | None = None
                 ) -> pd.DataFrame:
    """One row per (run, validation step): run_id, state, preset, step, tokens (seen so
    far), train_loss, loss (the composition) and loss.<domain>."""
    rows = []
    for r in runs:
        path = r.out / "metrics.jsonl"
        if not path.exists():
            continue
        try:  # a running run may be mid-write: read_jsonl drops a torn last line
            lines = read_jsonl(path)
        except ValueError as e:
            print(f"warning: {e}; run {r.run_id} left out", file=sys.stderr)
            continue
        per_step = int(r.config.get("batch", 8)) * int(r.config.get("seq_len", 128))
        for m in lines:
            if not m.get("eval"):
                continue
            rows.append({"run_id": r.run_id, "state": (states or {}).get(r.run_id, ""),
                         "preset": r.config.get("preset"), "step": m["step"],
                         "tokens": m["step"] * per_step, "train_loss": m.get("loss"),
                         "loss": m.get("eval_loss")}
                        | {f"loss.{d}": v for d, v in m["eval"].items()})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["run_id", "step"], kind="stable").reset_index(
        drop=True)


def print_curves(curves: pd.DataFrame, file=None) -> None:
    """Each run's validation loss (composition) against tokens seen, one line per run."""
    file = file or sys.stdout
    if curves.empty:
        print("no validation points yet: runs log one every eval_every steps", file=file)
        return
    domains = sorted(c[5:] for c in curves.columns if c.startswith("loss."))
    print(f"validation loss (eval composition of {', '.join(domains)}) at tokens seen:",
          file=file)
    for run_id, g in curves.groupby("run_id", sort=False):
        n = min(len(g), _MAX_POINTS)
        idx = sorted({round(i * (len(g) - 1) / max(1, n - 1)) for i in range(n)})
        pts = "  ".join(f"{t:.2g}: {_fmt(v)}" for t, v in
                        zip(g.tokens.iloc[idx], g.loss.iloc[idx]))
        last = g.iloc[-1]
        by_domain = ", ".join(f"{d} {_fmt(last[f'loss.{d}'])}" for d in domains)
        print(f"{run_id}  {last.state:8s} {str(last.preset):>6}  {pts}", file=file)
        print(f"{'':14s}{'':8s} {'':>6}  last point per domain: {by_domain}", file=file)


def _fmt(v) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def plot_curves(curves: pd.DataFrame, out: str | Path) -> Path:
    """Validation loss against tokens, one line per run, one panel per target; PNG at out."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if curves.empty:
        raise ValueError(f"--curves {out}: no run has logged a validation point yet")
    domains = sorted(c[5:] for c in curves.columns if c.startswith("loss."))
    targets = [("loss", "eval composition")] + [(f"loss.{d}", d) for d in
                                                domains[:_MAX_DOMAIN_PANELS]]
    cols = min(3, len(targets))
    rows = math.ceil(len(targets) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    presets = list(dict.fromkeys(curves.preset))
    colors = plt.get_cmap("viridis")([i / max(1, len(presets) - 1) for i in range(len(presets))])
    for ax, (col, title) in zip(axes.flat, targets):
        for _, g in curves.groupby("run_id", sort=False):
            g = g.dropna(subset=[col])
            ax.plot(g.tokens, g[col], marker="o", ms=2.5, lw=1, alpha=0.8,
                    color=colors[presets.index(g.preset.iloc[0])])
        ax.set(xscale="log", title=title, xlabel="tokens seen", ylabel="validation loss")
    for ax in axes.flat[len(targets):]:
        ax.axis("off")
    handles = [plt.Line2D([], [], color=c, label=p) for p, c in zip(presets, colors)]
    fig.legend(handles=handles, loc="upper right", fontsize=8, title="preset")
    fig.suptitle(f"validation curves of {curves.run_id.nunique()} runs")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write_bytes(out, buf.getvalue())


def tensorboard_command(out_dir: str | Path) -> str:
    """The one shell command that opens TensorBoard over every run of a sweep.

    Each run writes its event files in its own folder under the sweep's ``out``, so one
    ``--logdir`` shows every run (named by run id) and its profiles, if any.
    """
    exe = Path(sys.executable).parent / "tensorboard"  # the one installed beside datalaws
    return shlex.join([str(exe) if exe.exists() else "tensorboard",
                       "--logdir", str(Path(out_dir).absolute())])
