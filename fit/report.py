"""The posterior report: one self-contained HTML file (PNG figures embedded), each figure
also saved as PNG and SVG beside it.

The page opens with the answer: a decision card per plan (``datalaws plan`` writes
``plan.json`` into the fit folder; see fit/card.py). Then, per law, the fitted curves —
medians and bands of the law evaluated on a grid once per posterior draw (with one discrepancy
and noise draw per posterior draw, so the curves are smooth, not Monte Carlo noise) — and,
collapsed, parameters and priors, diagnostics, residuals, the discrepancy backtest, held-out
runs, the plan's candidates, trace and rank plots; the data and a PSIS-LOO comparison close.
The layout never scrolls sideways (wide tables scroll inside their own box) and follows the
reader's light or dark colour scheme; figures keep a white background in both.
"""

from __future__ import annotations

import base64
import html
import io
import warnings
from collections.abc import Sequence
from pathlib import Path

import arviz as az
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from datalaws.fit.api import predictive_draws  # noqa: E402
from datalaws.fit.card import decision_card, read_plan  # noqa: E402
from datalaws.fit.export import derived_table, param_table, priors_text  # noqa: E402
from datalaws.fit.result import Fit  # noqa: E402
from datalaws.fit.table import TableError  # noqa: E402
from datalaws.fit.trust import crn_log_loss  # noqa: E402

__all__ = ["write_report"]

CSS = """:root{color-scheme:light dark;--fg:#1d1d1f;--bg:#fff;--muted:#666;--line:#d0d0d0;
--head:#f3f3f3;--card:#f6f8fb;--accent:#1f5fbf;--bad:#b00020;--badbg:#fde7ea;--good:#137333}
@media (prefers-color-scheme:dark){:root{--fg:#e8e8e8;--bg:#16181c;--muted:#a0a0a0;
--line:#3a3d44;--head:#23262d;--card:#1e2229;--accent:#8ab4f8;--bad:#ff8a80;--badbg:#3b1f22;
--good:#81c995}}
*{box-sizing:border-box}html,body{max-width:100%;overflow-x:hidden}
body{font:15px/1.45 system-ui,sans-serif;color:var(--fg);background:var(--bg);
max-width:1100px;margin:0 auto;padding:1em 16px}
h1{font-size:1.6em}h2{font-size:1.3em;margin-top:1.6em}h3{font-size:1.05em}
p,dd,li{overflow-wrap:anywhere}code{overflow-wrap:anywhere;background:var(--head);
padding:0 3px;border-radius:3px}
.scroll{max-width:100%;overflow-x:auto;margin:.5em 0}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid var(--line);
padding:3px 8px;text-align:right;white-space:nowrap}th{background:var(--head)}
.fail{background:var(--badbg);color:var(--bad);font-weight:bold}.pass{color:var(--good)}
figure{margin:.8em 0}figure img{display:block;max-width:100%;height:auto;background:#fff;
border:1px solid var(--line);border-radius:4px}figcaption{font-size:12px;color:var(--muted)}
figcaption a{color:var(--accent)}
.card{background:var(--card);border:1px solid var(--line);border-left:5px solid var(--accent);
border-radius:6px;padding:.4em 1.2em 1em;margin:1em 0}.card h2{margin-top:.6em}
.card dl{display:grid;grid-template-columns:minmax(9em,16em) minmax(0,1fr);gap:.35em 1em;
margin:0}.card dt{font-weight:600}.card dd{margin:0}.card ul{margin:0;padding-left:1.2em}
.warn li{color:var(--bad)}.num{font-variant-numeric:tabular-nums}
@media (max-width:700px){.card dl{grid-template-columns:minmax(0,1fr)}}
details{border:1px solid var(--line);border-radius:6px;margin:.5em 0;padding:.3em .8em}
summary{cursor:pointer;font-weight:600}"""


def _fig(fig, out_dir: Path, name: str, alt: str) -> str:
    """Save ``fig`` as PNG and SVG beside the report; embed the PNG, link the SVG."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, facecolor="white")
    (out_dir / f"{name}.png").write_bytes(buf.getvalue())
    fig.savefig(out_dir / f"{name}.svg", format="svg", facecolor="white")
    plt.close(fig)
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,'
            f'{base64.b64encode(buf.getvalue()).decode()}"><figcaption>{html.escape(alt)} '
            f'(<a href="{out_dir.name}/{name}.svg">SVG</a>)</figcaption></figure>')


def _table(df: pd.DataFrame, **kw) -> str:
    return f"<div class='scroll'>{df.to_html(**kw)}</div>"


def _details(title: str, body: str, *, open_: bool = False) -> str:
    return (f"<details{' open' if open_ else ''}><summary>{title}</summary>{body}</details>"
            if body else "")


def _curves(r: Fit, df: pd.DataFrame, out_dir: Path, name: str) -> str:
    cols = r.columns
    ncol, dcol = cols.get("N"), cols.get("D")
    if ncol is None or dcol is None or set(r.law.inputs) - {"N", "D"}:
        return ""
    fig, ax = plt.subplots(figsize=(8, 4.8), layout="constrained")
    ratio = df[dcol] / df[ncol]  # runs are laid out along tokens per parameter: so are curves
    levels = np.unique(np.quantile(ratio, [0.1, 0.5, 0.9]).round(1))
    grid = np.geomspace(df[ncol].min() / 2, df[ncol].max() * 8, 120)
    colors = plt.cm.viridis(np.linspace(0.1, 0.8, len(levels)))
    for m, col in zip(levels, colors):
        pts = pd.DataFrame({ncol: grid, dcol: m * grid})
        # one law curve per posterior draw (one discrepancy and noise draw each): smooth bands
        q = np.exp(np.quantile(crn_log_loss(r, pts)[0], [0.05, 0.25, 0.5, 0.75, 0.95], axis=0))
        ax.fill_between(grid, q[0], q[4], color=col, alpha=0.15, lw=0)
        ax.fill_between(grid, q[1], q[3], color=col, alpha=0.3, lw=0)
        ax.plot(grid, q[2], color=col, label=f"D/N = {m:.3g} tokens per parameter")
    sc = ax.scatter(df[ncol], df[cols["loss"]], c=np.log10(ratio), s=16, cmap="viridis",
                    vmin=np.log10(levels.min()) - 0.05, vmax=np.log10(levels.max()) + 0.05,
                    edgecolor="k", linewidth=0.3, label="observed runs", zorder=3)
    fig.colorbar(sc, ax=ax, label="log10 tokens per parameter D/N")
    ax.axvline(float(df[ncol].max()), color="gray", ls=":", label="largest fitted N")
    ax.set(xscale="log", xlabel="parameters N", ylabel="loss (nats/token)")
    ax.legend(fontsize=8, loc="upper right", title="median, 50% and 90% bands",
              title_fontsize=8)
    return _fig(fig, out_dir, f"{name}_curves",
                f"{name}: posterior predictive loss against size at fixed tokens per parameter")


def _residuals(r: Fit, df: pd.DataFrame, out_dir: Path, name: str) -> str:
    cols = r.columns
    df = r.law.prepare(df, runs=True)  # the rows the law was fitted to (one per eval domain)
    med = np.median(predictive_draws(r, df)["loss_law"], axis=0)
    y = df[cols["loss"]].to_numpy()
    fig, ax = plt.subplots(figsize=(8, 3.4), layout="constrained")
    ax.scatter(df[cols[r.law.axis]], np.log(y) - np.log(med), s=12)
    ax.axhline(0, color="k", lw=0.8)
    ax.set(xscale="log", xlabel=f"{cols[r.law.axis]}", ylabel="log(observed / law median)")
    return _fig(fig, out_dir, f"{name}_residuals", f"{name}: residuals of the fitted runs")


def _trace_rank(r: Fit, out_dir: Path, name: str) -> str:
    names = [p.name for p in r.law.params]
    rows = len(names)
    axes = az.plot_trace(r.idata, var_names=names, compact=True, figsize=(10, 1.7 * rows),
                         backend_kwargs={"layout": "constrained"})
    trace = _fig(axes.flat[0].figure, out_dir, f"{name}_trace", f"{name}: trace plots")
    ncols = min(4, rows)
    nrows = -(-rows // ncols)
    fig, axs = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 2.2 * nrows),
                            layout="constrained", squeeze=False)
    az.plot_rank(r.idata, var_names=names, ax=axs.flat[:rows])
    for ax in axs.flat[rows:]:
        ax.set_visible(False)
    return trace + _fig(fig, out_dir, f"{name}_rank",
                        f"{name}: rank plots (uniform when chains agree)")


def _backtest(r: Fit, out_dir: Path, name: str) -> str:
    dsum = r.discrepancy
    rows = dsum.get("backtest") or []
    src = html.escape(str(dsum.get("k_source", "")))
    if not rows:
        return f"<p>no backtest folds ({src or 'discrepancy = ' + dsum.get('mode', 'none')})</p>"
    bt = pd.DataFrame(rows)
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    mid = (bt.d_lo + bt.d_hi) / 2
    for mode, marker, fill in (("none", "o", "none"), ("backtest", "s", None)):
        for lv, color in ((90, "C0"), (50, "C1")):
            ax.scatter(mid, bt[f"{mode}_cov{lv}"], marker=marker, s=28, color=color,
                       facecolors=fill, label=f"{lv}% coverage, "
                       f"{'k = 0' if mode == 'none' else 'with the discrepancy'}")
    for lv in (0.9, 0.5):
        ax.axhline(lv, color="gray", ls=":", lw=0.8)
    ax.set(xlabel="extrapolation distance of the held-back rows", ylabel="coverage",
           ylim=(-0.03, 1.05))
    ax.legend(fontsize=7, loc="lower left", ncols=2)
    out = _fig(fig, out_dir, f"{name}_backtest",
               f"{name}: backtest coverage by distance, per fold and distance bin")
    out += _backtest_points(dsum, out_dir, name)
    k = f"k = {r.discrepancy_k:.3g}"
    return (f"<p>{html.escape(dsum.get('form', ''))} {k} {src}</p>" + out
            + _table(bt.round(3), index=False))


def _backtest_points(dsum: dict, out_dir: Path, name: str) -> str:
    pts = pd.DataFrame(dsum.get("backtest_points") or [])
    if pts.empty:
        return ""
    # every held-back row of every fold against its fold's prediction: the 90% intervals
    # (without and with the discrepancy) widen with distance; the points are observed runs
    key = "fold" if "fold" in pts else "cut"
    fig, ax = plt.subplots(figsize=(8, 3.8), layout="constrained")
    folds = sorted(pts[key].unique())
    colors = plt.cm.plasma(np.linspace(0.1, 0.8, len(folds)))
    for fold, col in zip(folds, colors):
        f = pts[pts[key] == fold].sort_values("d")
        rel = {c: 100 * (np.exp(f[c] - f["median"]) - 1) for c in
               ("log_y", "lo90_none", "hi90_none", "lo90_k", "hi90_k")}
        ax.vlines(f.d, rel["lo90_k"], rel["hi90_k"], color=col, alpha=0.35, lw=3)
        ax.vlines(f.d, rel["lo90_none"], rel["hi90_none"], color=col, lw=1)
        label = (f"fold {fold}: {f.direction.iloc[0]}" if "direction" in f else
                 f"fit <= {fold:.3g}")
        ax.scatter(f.d, rel["log_y"], color=col, s=14, edgecolor="k", linewidth=0.3,
                   label=label, zorder=3)
    ax.axhline(0, color="k", lw=0.6)
    ax.set(xlabel="distance of the held-back row beyond its fold's data",
           ylabel="observed vs fold median (%)")
    ax.legend(fontsize=7, ncols=2)
    return _fig(fig, out_dir, f"{name}_backtest_points",
                f"{name}: held-back runs against their folds' 90% intervals "
                "(thin: k = 0, thick: with the discrepancy)")


def _diagnostics(r: Fit) -> str:
    # a two-stage accuracy link's own sampler checks follow, labelled: they do not decide
    # whether the loss law passes
    link = ((r.accuracy or {}).get("diagnostics") or {}).get("checks", {})
    checks = list(r.diagnostics.checks.items()) + [(f"accuracy link: {k}", c)
                                                   for k, c in link.items()]
    rows = "".join(
        f"<tr class='{'pass' if c['pass'] else 'fail'}'><td>{k}</td><td>{c['value']:.4g}</td>"
        f"<td>{html.escape(c['rule'])}</td><td>{'pass' if c['pass'] else 'FAIL'}</td></tr>"
        for k, c in checks)
    return ("<div class='scroll'><table><tr><th>check</th><th>value</th><th>rule</th>"
            f"<th>verdict</th></tr>{rows}</table></div>")


def _params(r: Fit) -> str:
    priors, nan = priors_text(r), float("nan")  # a point fit has no sampler statistics
    meanings = {p.name: p.meaning for p in r.law.params}
    rows = "".join(
        f"<tr><td>{k}</td><td>{html.escape(priors.get(k.split('[')[0], ''))}</td>"
        f"<td>{v['mean']:.4g}</td><td>{v['q05']:.4g}</td><td>{v['q95']:.4g}</td>"
        f"<td>{v.get('r_hat', nan):.3f}</td><td>{v.get('ess_bulk', nan):.0f}</td>"
        f"<td>{v.get('ess_tail', nan):.0f}</td>"
        f"<td style='text-align:left'>{html.escape(meanings.get(k, ''))}</td></tr>"
        for k, v in param_table(r).items())
    rows += "".join(f"<tr><td>{k} (derived)</td><td></td><td>{v['mean']:.4g}</td>"
                    f"<td>{v['q05']:.4g}</td><td>{v['q95']:.4g}</td><td colspan=4></td></tr>"
                    for k, v in derived_table(r).items())
    return ("<div class='scroll'><table><tr><th>param</th><th>prior</th><th>mean</th>"
            "<th>q05</th><th>q95</th><th>R-hat</th><th>ESS bulk</th><th>ESS tail</th>"
            f"<th>meaning</th></tr>{rows}</table></div>")


def _loo(results: Sequence[Fit]) -> str:
    by_hash: dict[str, list[Fit]] = {}
    for r in results:
        by_hash.setdefault(r.data.get("data_hash"), []).append(r)
    parts = []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        try:
            with warnings.catch_warnings():  # Pareto k > 0.7: the table's warning column
                warnings.simplefilter("ignore", UserWarning)
                cmp = az.compare({r.law.name: r.idata for r in group}, var_name="log_loss")
        except (KeyError, ValueError, TypeError) as e:  # e.g. no pointwise log likelihood
            parts.append(f"<p>no PSIS-LOO for {', '.join(r.law.name for r in group)}: "
                         f"{html.escape(str(e))}</p>")
            continue
        parts.append(_table(cmp.round(3)))
    return "".join(parts) or "<p>one law per table: no comparison</p>"


def _plan_candidates(p: dict | None) -> str:
    if p is None:
        return ""
    rows = pd.DataFrame(p["candidates"]).drop(columns=["score"], errors="ignore").head(10)
    d = p["default"]
    return (f"<p>Point-fit compute-optimal default: {d['params']:.3g} parameters, "
            f"{d['tokens']:.3g} tokens; P(plan beats it) = {p['p_beats_default']:.2f}.</p>"
            + _table(rows.round(4).astype(object).where(rows.notna(), "-"), index=False))


def _law_warnings(r: Fit) -> list[str]:
    out = []
    if not r.diagnostics.ok:
        out.append("sampler diagnostics FAILED: do not trust this fit ("
                   + "; ".join(r.diagnostics.failures()) + ")")
    table = param_table(r) if {"gamma", "delta"} & {p.name for p in r.law.params} else {}
    for name in ("gamma", "delta"):
        p = table.get(name)
        if p and p["q05"] < 0 < p["q95"]:
            out.append(f"quality effect {name}: 90% interval [{p['q05']:.3g}, {p['q95']:.3g}] "
                       "spans zero; the data cannot tell its sign")
    if r.discrepancy.get("k_source", "").startswith("prior"):
        out.append(f"discrepancy k: {r.discrepancy['k_source']}")
    return out


def _law_section(d: Path, r: Fit, table: pd.DataFrame | None, fig_dir: Path) -> str:
    name, ok = r.law.name, r.diagnostics.ok
    warns = _law_warnings(r)
    parts = [f"<h2>Law: {html.escape(name)}</h2><p><code>{html.escape(r.law.formula)}</code> "
             f"({html.escape(r.law.reference)}); fitted on {r.data.get('n_rows')} runs; "
             f"likelihood {r.likelihood} on log loss; sampler diagnostics "
             + ("<span class='pass'>pass</span>" if ok else
                "<span class='fail'>FAILED</span>") + ".</p>"]
    if warns:
        parts.append("<ul class='warn'>" + "".join(f"<li>{html.escape(w)}</li>" for w in warns)
                     + "</ul>")
    if table is not None:
        curves = _curves(r, table, fig_dir, name)
        if curves:
            parts.append("<h3>Fitted curves</h3>" + curves)
    parts.append(_details("Parameters and priors", _params(r)))
    parts.append(_details("Diagnostics", _diagnostics(r), open_=not ok))
    if table is not None:
        parts.append(_details("Residuals", _residuals(r, table, fig_dir, name)))
    parts.append(_details("Extrapolation: discrepancy backtest", _backtest(r, fig_dir, name)))
    if r.holdout:
        h = pd.DataFrame({k: {"n": v["n"], "past the backtests' reach": v.get("n_unbacktested"),
                              "median |err|": v["median_abs_err"],
                              **{f"cov {c}": x for c, x in v["coverage"].items()}}
                          for k, v in r.holdout.items()}).T
        expr = r.data.get("holdout_expr")
        parts.append(_details(f"Held-out runs ({html.escape(str(expr))})",
                              _table(h.round(3))))
    p = read_plan(d)
    if p is not None:
        parts.append(_details(f"Compute plan candidates ({p['budget_flops']:.3g} FLOPs)",
                              _plan_candidates(p)))
    parts.append(_details("Trace and rank plots", _trace_rank(r, fig_dir, name)))
    return "".join(parts)


def _cards(fit_dirs: Sequence[str | Path], results: Sequence[Fit]) -> str:
    cards = []
    for d, r in zip(fit_dirs, results):
        p = read_plan(d)
        if p is not None:
            extra = [w for w in _law_warnings(r) if w not in " ".join(p.get("warnings") or [])
                     and not w.startswith("sampler")]
            cards.append(decision_card(p, r.law.name, extra_warnings=extra))
    if not cards:
        return ("<p>No compute plan yet: <code>datalaws plan FIT --budget FLOPS "
                "--objective q90</code> writes one, and this page then opens with it.</p>")
    return "".join(cards)


def write_report(fit_dirs: Sequence[str | Path], table: pd.DataFrame | None,
                 out: str | Path) -> Path:
    """Write the HTML report (and its figures as PNG and SVG beside it); returns its path."""
    from datalaws.records import atomic_write_text

    out = Path(out)
    results = [Fit.load(d) for d in fit_dirs]
    for d, r in zip(fit_dirs, results):  # before anything is written
        if table is not None and not set(r.law.inputs) - {"N", "D"}:  # its curves read these
            missing = [c for c in r.columns.values() if c not in table.columns]
            if missing:
                raise TableError(f"--data: no {'columns' if len(missing) > 1 else 'column'} "
                                 f"{', '.join(map(repr, missing))}, which "
                                 f"the fit {d} reads; the table has {list(table.columns)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig_dir = out.parent / f"{out.stem}_figures"
    fig_dir.mkdir(exist_ok=True)
    body = [f"<h1>datalaws report</h1><p>{len(results)} fitted law(s)"
            + (f" on {len(table)} runs" if table is not None else "") + ".</p>",
            _cards(fit_dirs, results), "<div id='after-decisions'></div>"]
    for d, r in zip(fit_dirs, results):
        body.append(_law_section(Path(d), r, table, fig_dir))
    body.append("<h2>Law comparison (PSIS-LOO)</h2>" + _loo(results))
    if table is not None:
        body.append("<h2>Data</h2>" + _details(
            f"{len(table)} runs: summary of every column",
            _table(table.describe().T.round(4))))
    page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>datalaws report</title><style>{CSS}</style></head>"
            f"<body>{''.join(body)}</body></html>")
    atomic_write_text(out, page)
    return out
