"""The demo's fits, decisions and report summary (``datalaws.demo`` step 4).

Chinchilla with a second-stage loss -> accuracy link (``fit.accuracy``), the per-domain
mixing law on ``loss.<domain>`` with the declared evaluation composition, the quality-aware
law on runs of different measured quality, and the nested step x size x mixture model on
the validation curves. Each result is printed in a line or two and gathered into a summary
that opens the HTML report.
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["fit_all", "quality_verdict"]

Q = (0.05, 0.5, 0.95)


def _interval(draws) -> str:
    lo, mid, hi = np.quantile(np.asarray(draws), Q)
    return f"{mid:.3f} [90%: {lo:.3f}, {hi:.3f}]"


def quality_verdict(summary: dict) -> str:
    """gamma / delta intervals, and whether the data can tell their sign."""
    parts = []
    for name, what in (("gamma", "diversity"), ("delta", "syntheticity")):
        p = summary["params"][name]
        spans = p["q05"] < 0 < p["q95"]
        parts.append(f"{name} ({what}) {p['q50']:.2f} [{p['q05']:.2f}, {p['q95']:.2f}]"
                     + (": the interval spans 0, the data cannot tell the sign of this "
                        "effect" if spans else ": excludes 0"))
    return "; ".join(parts)


def _diag(r) -> str:
    d = r.diagnostics
    out = f"{r.law.name} diagnostics: " + ("pass" if d.ok else "FAIL: " + "; ".join(
        d.failures()))
    link = (r.accuracy or {}).get("diagnostics")
    if link:  # the second-stage link's own sampler, apart from the law's
        out += "; accuracy link diagnostics: " + ("pass" if link["ok"] else "FAIL: " +
                                                  "; ".join(link["failures"]))
    return out


def _mixing(out: Path, base: pd.DataFrame, cfg, eval_mix: dict, at: tuple[float, float],
            lines: list[str]):
    from datalaws.fit import fit
    from datalaws.fit.api import predictive_draws
    from datalaws.fit.mixture import best_mixture

    mix = fit(base, "mixing_domains", config=cfg)
    mix.save(out / "fit_mixing")
    print(_diag(mix))
    lines.append(_diag(mix))
    uniform = {d: 1 / 3 for d in eval_mix}
    best = best_mixture(mix, params=at[0], tokens=at[1], default=uniform, evals=eval_mix)
    # float32 softmax can land a hair outside [0, 1] at a corner of the simplex
    r = np.clip(np.array([best["mixture"][d] for d in eval_mix], float), 0.0, 1.0)
    best["mixture"] = dict(zip(eval_mix, (r / r.sum()).tolist()))
    rows = pd.DataFrame([{f"mix.{d}": r.get(d, 0.0) for d in eval_mix}
                         | {f"eval.{d}": w for d, w in eval_mix.items()}
                         | {"params": at[0], "tokens": at[1]} for r in (best["mixture"],
                                                                         uniform)])
    draws = predictive_draws(mix, rows)["loss"]
    lines.append(f"best mixture for {at[0]:.3g} params x {at[1]:.3g} tokens (loss on the "
                 "declared composition): " + ", ".join(f"{k}={v:.2f}" for k, v in
                                                      best["mixture"].items())
                 + f"; loss {_interval(draws[:, 0])} vs uniform {_interval(draws[:, 1])}; "
                 f"P(beats uniform) = {best['p_beats_default']:.2f}")
    return mix, best


def _nested(out: Path, curves: pd.DataFrame, best: dict, at: tuple[float, float],
            lines: list[str]) -> None:
    from datalaws.fit.nested import fit_nested
    from datalaws.records import atomic_write_text

    f = fit_nested(curves, chains=4, warmup=400, draws=500)
    steps = at[1] / (8 * 64)
    draws = f.predict([best["mixture"][d] for d in f.domains], at[0], steps)
    div = int(np.asarray(f.mcmc.get_extra_fields()["diverging"]).sum())
    s = {k: _interval(f.samples[k]) for k in ("alpha", "beta", "e_mid")}
    atomic_write_text(out / "nested.json", json.dumps(
        {"points": len(curves), "runs": int(curves.run_id.nunique()), "divergences": div,
         "params": s, "prediction": {"params": at[0], "step": steps,
                                     "mixture": best["mixture"], "loss": _interval(draws)}},
        indent=1))
    lines.append(f"nested (step x size x mixture) on {len(curves)} curve points of "
                 f"{curves.run_id.nunique()} runs: alpha {s['alpha']}, beta {s['beta']}; "
                 f"loss at the best mixture, {at[0]:.3g} params, step {steps:.0f}: "
                 f"{_interval(draws)}" + (f" ({div} divergences)" if div else ""))


def _accuracy(result, point: dict, lines: list[str]) -> None:
    from datalaws.fit.api import predictive_draws

    draws = predictive_draws(result, pd.DataFrame([point]))
    tasks = sorted(k[4:] for k in draws if k.startswith("acc."))
    floors = dict(zip(result.link.tasks, result.link.floors)) if result.link else {}
    for t in tasks:
        floor = floors.get(t)
        lines.append(f"predicted accuracy on {t} at {point['params']:.3g} params x "
                     f"{point['tokens']:.3g} tokens: {_interval(draws[f'acc.{t}'][:, 0])}"
                     + (f" (chance {floor:.2f})" if floor is not None else ""))


def fit_all(out: Path, df: pd.DataFrame, base: pd.DataFrame, curves: pd.DataFrame,
            eval_mix: dict) -> Path:
    """Every fit of the demo; prints a short log and returns the report's path."""
    from datalaws.fit import FitConfig, fit
    from datalaws.fit.plan import plan
    from datalaws.fit.report import write_report
    from datalaws.records import atomic_write_text

    # ~20 runs cannot identify a Student-t's degrees of freedom: a Gaussian on log loss.
    # Three model sizes leave a narrow E-A-alpha ridge; small NUTS steps cross it, and 4 x 2000
    # draws (seconds here) keep R-hat and the accuracy link's tail ESS clear of their limits.
    cfg = FitConfig(chains=4, warmup=1000, draws=2000, likelihood="normal", target_accept=0.99)
    lines: list[str] = []
    chin = fit(base, "chinchilla", config=cfg, accuracy="sigmoid")
    chin.save(out / "fit_chinchilla")
    print(_diag(chin))
    lines.append(_diag(chin))
    at = (float(base.params.max()) * 4, float(base.tokens.max()) * 4)
    mix, best = _mixing(out, base, cfg, eval_mix, at, lines)
    fits = [out / "fit_chinchilla", out / "fit_mixing"]
    quality = fit(df, "quality", config=cfg)
    quality.save(out / "fit_quality")
    fits.append(out / "fit_quality")
    print(_diag(quality))
    lines.append(_diag(quality))
    lines.append(f"quality law on {len(df)} runs (diversity {df.diversity.min():.3f}-"
                 f"{df.diversity.max():.3f}, syntheticity {df.syntheticity.min():.4f}-"
                 f"{df.syntheticity.max():.4f}): " + quality_verdict(quality.summary))
    _nested(out, curves, best, at, lines)
    budget = float(base.flops.max()) * 10
    # default trust region: from the smallest trained size to 100x the largest
    p = plan(chin, budget, objective="q90")
    atomic_write_text(out / "fit_chinchilla" / "plan.json",
                      json.dumps(p.to_dict(), indent=1, default=str))
    t = p.trust
    lines.append(f"risk-averse (q90) plan for {budget:.3g} FLOPs: {p.chosen['params']:.3g} "
                 f"params, {p.chosen['tokens']:.3g} tokens, inside the allowed "
                 f"{t['min_params']:.3g}-{t['max_params']:.3g} params"
                 + (f" ({t['optimum_outside']})" if t["optimum_outside"] else "")
                 + (f"; P(beats the runner-up) = {p.p_beats_runner_up:.2f}, "
                    f"{p.to_dict()['p_beats_runner_up_words']}"
                    if p.p_beats_runner_up is not None else ""))
    _accuracy(chin, {"params": p.chosen["params"], "tokens": p.chosen["tokens"]}, lines)
    for line in lines:
        print(line)
    # one table for every fit: the base runs (the mixing law knows only the base domains)
    report = write_report(fits, base, out / "report.html")
    page = report.read_text()
    summary = ("<section id='demo-summary'><h2>Demo summary</h2><ul>"
               + "".join(f"<li>{html.escape(x)}</li>" for x in lines) + "</ul></section>")
    # the summary follows the decision cards (the report's answer-first block), else opens
    # the page right after the <body ...> tag
    page, n = re.subn(r"(<div id='after-decisions'></div>)", lambda m: m.group(1) + summary,
                      page, count=1)
    if not n:
        page, n = re.subn(r"(<body[^>]*>)", lambda m: m.group(1) + summary, page, count=1)
    atomic_write_text(report, page if n else summary + page)
    return report
