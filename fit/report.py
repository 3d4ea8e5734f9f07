"""The posterior report: one self-contained HTML file (PNG figures embedded) plus the PNGs.

Sections: data, law and priors, fitted curves with 50%/90% credible bands out past the data,
residuals, trace and rank plots (ArviZ), diagnostics (failures marked), discrepancy backtest,
and, when several laws share a table, a PSIS-LOO comparison.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit.api import FitResult, _law_frame, load_fit, predictive_draws  # noqa: E402

__all__ = ["write_report"]

CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:right}th{background:#f3f3f3}.fail{background:#fdd;color:#900;font-weight:bold}
.pass{color:#070}img{max-width:100%;border:1px solid #eee;margin:.5em 0}code{background:#f5f5f5}"""


def _png(fig, out_dir: Path, name: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    (out_dir / f"{name}.png").write_bytes(buf.getvalue())
    return (f'<img alt="{name}" src="data:image/png;base64,'
            f'{base64.b64encode(buf.getvalue()).decode()}">')


def _curves(r: FitResult, df: pd.DataFrame, out_dir: Path, name: str) -> str:
    cols = r.summary["columns"]
    ncol, dcol = cols.get("N"), cols.get("D")
    if ncol is None or dcol is None or r.law.name not in ("chinchilla", "overtrain"):
        return ""
    fig, ax = plt.subplots(figsize=(8, 5))
    d_levels = np.quantile(df[dcol], [0.1, 0.5, 0.9])
    n_lo, n_hi = df[ncol].min(), df[ncol].max()
    grid = np.geomspace(n_lo / 2, n_hi * 8, 60)
    colors = plt.cm.viridis(np.linspace(0.1, 0.8, len(d_levels)))
    for dv, col in zip(d_levels, colors):
        pts = pd.DataFrame({ncol: grid, dcol: np.full_like(grid, dv)})
        draws = predictive_draws(r, pts)["loss"]
        q = np.quantile(draws, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
        ax.fill_between(grid, q[0], q[4], color=col, alpha=0.15)
        ax.fill_between(grid, q[1], q[3], color=col, alpha=0.3)
        ax.plot(grid, q[2], color=col, label=f"D = {dv:.3g} tokens (median, 50%, 90%)")
    sc = ax.scatter(df[ncol], df[r.summary["columns"]["loss"]], c=np.log10(df[dcol]), s=14,
                    cmap="viridis", edgecolor="k", linewidth=0.3, label="observed runs")
    fig.colorbar(sc, ax=ax, label="log10 training tokens D")
    ax.axvline(r.summary["discrepancy"]["x_max_fit"], color="gray", ls=":",
               label="largest fitted N (extrapolation beyond)")
    ax.set(xscale="log", xlabel="parameters N", ylabel="loss (nats/token)",
           title=f"{r.law.name}: posterior predictive")
    ax.legend(fontsize=8, loc="upper right")
    return _png(fig, out_dir, f"{name}_curves")


def _residuals(r: FitResult, df: pd.DataFrame, out_dir: Path, name: str) -> str:
    cols = r.summary["columns"]
    df = _law_frame(df, r.law)  # the rows the law was fitted to (e.g. one per eval domain)
    draws = predictive_draws(r, df)["loss_law"]
    med = np.median(draws, axis=0)
    y = df[cols["loss"]].to_numpy()
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.scatter(df[cols[r.law.axis]], np.log(y) - np.log(med), s=10)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel=f"{cols[r.law.axis]} (extrapolation axis)",
           ylabel="log(observed / law median)", title="residuals")
    return _png(fig, out_dir, f"{name}_residuals")


def _trace_rank(r: FitResult, out_dir: Path, name: str) -> str:
    names = [p.name for p in r.law.params]
    axes = az.plot_trace(r.idata, var_names=names, compact=True)
    axes[0, 0].figure.suptitle("trace", y=1.0)
    trace = _png(axes[0, 0].figure, out_dir, f"{name}_trace")
    axes = np.atleast_1d(az.plot_rank(r.idata, var_names=names))
    axes.flat[0].figure.suptitle("rank plots (uniform = chains agree)", y=1.02)
    return trace + _png(axes.flat[0].figure, out_dir, f"{name}_rank")


def _backtest(r: FitResult, out_dir: Path, name: str) -> str:
    rows = r.summary["discrepancy"].get("backtest") or []
    if not rows:
        return "<p>no backtest (discrepancy = none)</p>"
    bt = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    mid = (bt.d_lo + bt.d_hi) / 2
    for mode, m in (("none", "o--"), ("backtest", "s-")):
        ax.plot(mid, bt[f"{mode}_cov90"], m, label=f"90% coverage, discrepancy={mode}")
        ax.plot(mid, bt[f"{mode}_cov50"], m, alpha=0.5, label=f"50% coverage, {mode}")
    ax.axhline(0.9, color="gray", ls=":")
    ax.axhline(0.5, color="gray", ls=":")
    ax.set(xlabel="extrapolation distance d = log(x / x_max_fit)", ylabel="coverage",
           ylim=(0, 1.05), title=f"size-ordered backtest, k = {r.k:.3g}")
    ax.legend(fontsize=7)
    html_out = _png(fig, out_dir, f"{name}_backtest")
    pts = pd.DataFrame(r.summary["discrepancy"].get("backtest_points") or [])
    if len(pts):
        # every held-back row of every fold against its fold's prediction: the 90% intervals
        # (without and with the discrepancy) widen with distance; the points are observed runs
        fig, ax = plt.subplots(figsize=(8, 4))
        cuts = sorted(pts.cut.unique())
        colors = plt.cm.plasma(np.linspace(0.1, 0.8, len(cuts)))
        for cut, col in zip(cuts, colors):
            f = pts[pts.cut == cut].sort_values("d")
            rel = {c: 100 * (np.exp(f[c] - f["median"]) - 1) for c in
                   ("log_y", "lo90_none", "hi90_none", "lo90_k", "hi90_k")}
            ax.fill_between(f.d, rel["lo90_k"], rel["hi90_k"], color=col, alpha=0.12, step="mid")
            ax.plot(f.d, rel["lo90_none"], color=col, lw=0.8, ls="--")
            ax.plot(f.d, rel["hi90_none"], color=col, lw=0.8, ls="--")
            ax.scatter(f.d, rel["log_y"], color=col, s=12, edgecolor="k", linewidth=0.3,
                       label=f"fit <= {cut:.3g}: observed")
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xlabel="distance beyond the fold's data d = log(x / cut)",
               ylabel="observed vs fold median (%)",
               title="backtest: 90% intervals, dashed k = 0, shaded with the discrepancy")
        ax.legend(fontsize=7)
        html_out += _png(fig, out_dir, f"{name}_backtest_points")
    return html_out + bt.round(3).to_html(index=False)


def _diagnostics(r: FitResult) -> str:
    rows = "".join(
        f"<tr class='{'pass' if c['pass'] else 'fail'}'><td>{k}</td><td>{c['value']:.4g}</td>"
        f"<td>{html.escape(c['rule'])}</td><td>{'pass' if c['pass'] else 'FAIL'}</td></tr>"
        for k, c in r.summary["diagnostics"]["checks"].items())
    return ("<table><tr><th>check</th><th>value</th><th>rule</th><th>verdict</th></tr>"
            f"{rows}</table>")


def _params(r: FitResult) -> str:
    s = r.summary
    rows = "".join(
        f"<tr><td>{k}</td><td>{html.escape(s['priors'].get(k.split('[')[0], ''))}</td>"
        f"<td>{v['mean']:.4g}</td><td>{v['q05']:.4g}</td><td>{v['q95']:.4g}</td>"
        f"<td>{v['r_hat']:.3f}</td><td>{v['ess_bulk']:.0f}</td><td>{v['ess_tail']:.0f}</td>"
        f"<td style='text-align:left'>{html.escape(s['meanings'].get(k, ''))}</td></tr>"
        for k, v in s["params"].items())
    rows += "".join(f"<tr><td>{k} (derived)</td><td></td><td>{v['mean']:.4g}</td>"
                    f"<td>{v['q05']:.4g}</td><td>{v['q95']:.4g}</td><td colspan=4></td></tr>"
                    for k, v in s["derived"].items())
    return ("<table><tr><th>param</th><th>prior</th><th>mean</th><th>q05</th><th>q95</th>"
            "<th>R-hat</th><th>ESS bulk</th><th>ESS tail</th><th>meaning</th></tr>"
            f"{rows}</table>")


def _loo(results: Sequence[FitResult]) -> str:
    by_hash = {}
    for r in results:
        by_hash.setdefault(r.summary["data_hash"], []).append(r)
    parts = []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        cmp = az.compare({r.law.name: r.idata for r in group}, var_name="log_loss")
        parts.append(cmp.round(3).to_html())
    return "".join(parts) or "<p>one law per table: no comparison</p>"


def _plan(fit_dir: Path) -> str:
    import json

    f = Path(fit_dir) / "plan.json"
    if not f.exists():
        return ""
    p = json.loads(f.read_text())
    rows = pd.DataFrame(p["candidates"]).drop(columns=["score"], errors="ignore").head(8)
    c, d = p["chosen"], p["default"]
    return (f"<h3>Compute plan ({p['budget_flops']:.3g} FLOPs, objective {p['objective']})</h3>"
            f"<p>Plan: <b>{c.get('preset') or '-'}</b>, {c['params']:.3g} parameters, "
            f"{c['tokens']:.3g} tokens. Default (point-fit compute-optimal): "
            f"{d['params']:.3g} parameters, {d['tokens']:.3g} tokens. "
            f"P(plan beats default) = {p['p_beats_default']:.2f}.</p>"
            + rows.round(4).astype(object).where(rows.notna(), "-").to_html(index=False))


def write_report(fit_dirs: Sequence[str | Path], table: pd.DataFrame | None,
                 out: str | Path) -> Path:
    """Write the HTML report (and its PNGs beside it); returns its path."""
    from datalaws.records import atomic_write_text

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig_dir = out.parent / f"{out.stem}_figures"
    fig_dir.mkdir(exist_ok=True)
    results = [load_fit(d) for d in fit_dirs]
    body = [f"<h1>datalaws report</h1><p>{len(results)} fitted law(s).</p>"]
    if table is not None:
        body.append(f"<h2>Data</h2><p>{len(table)} runs.</p>"
                    + table.describe().T.round(4).to_html())
    for d, r in zip(fit_dirs, results):
        name = r.law.name
        s = r.summary
        ok = s["diagnostics"]["ok"]
        body.append(f"<h2>Law: {name}</h2><p><code>{html.escape(s['formula'])}</code> — "
                    f"{html.escape(s['reference'])}; fitted on {s['n_rows']} runs; likelihood "
                    f"{s['likelihood']} on log loss.</p>")
        body.append("<h3>Diagnostics</h3>" + _diagnostics(r) + (
            "" if ok else "<p class='fail'>Sampler diagnostics FAILED: do not trust this fit."
                          "</p>"))
        body.append("<h3>Parameters and priors</h3>" + _params(r))
        if table is not None:
            body.append("<h3>Fitted curves</h3>" + _curves(r, table, fig_dir, name))
            body.append("<h3>Residuals</h3>" + _residuals(r, table, fig_dir, name))
        body.append("<h3>Extrapolation: discrepancy backtest</h3>"
                    f"<p>{html.escape(s['discrepancy']['form'])}</p>"
                    + _backtest(r, fig_dir, name))
        if "holdout" in s:
            h = pd.DataFrame({k: {"n": v["n"], "median |err|": v["median_abs_err"],
                                  **{f"cov {c}": x for c, x in v["coverage"].items()}}
                              for k, v in s["holdout"].items()}).T
            body.append(f"<h3>Held-out runs ({html.escape(s['holdout_expr'])})</h3>"
                        + h.round(3).to_html())
        body.append(_plan(d))
        body.append("<h3>Trace and rank plots</h3>" + _trace_rank(r, fig_dir, name))
    body.append("<h2>Law comparison (PSIS-LOO)</h2>" + _loo(results))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>datalaws report</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")
    atomic_write_text(out, page)
    return out
