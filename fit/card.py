"""The decision card: what a planner came for, first, in one box per plan.

Recommended size, tokens and mixture (or pool); predicted loss and accuracy with 50% and 90%
intervals; how far the plan reaches beyond the fitted runs and how well the backtest's
intervals held at that distance; how likely it is to beat the runner-up, in words; and what
could be wrong. Every number is written from ``plan.json`` and carries its key and exact
value (``data-key``, ``data-value``) so a test can check the card against the file.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from datalaws.fit.trust import in_words

__all__ = ["read_plan", "decision_card"]


def read_plan(fit_dir: str | Path) -> dict | None:
    """The fit's ``plan.json``, or None when no plan was made."""
    f = Path(fit_dir) / "plan.json"
    if not f.exists():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: corrupt ({e.msg}); rerun `datalaws plan`") from None


def _num(key: str, value, fmt: str = ".4g") -> str:
    if value is None:
        return "-"
    return (f'<span class="num" data-key="{html.escape(key)}" data-value="{float(value)!r}">'
            f"{float(value):{fmt}}</span>")


def _interval(prefix: str, c: dict, metric: str) -> str:
    g = {q: c.get(f"{metric}_{q}") for q in ("q05", "q25", "q50", "q75", "q95")}
    if g["q50"] is None:
        return "-"
    k = f"{prefix}.{metric}_"
    return (f"median {_num(k + 'q50', g['q50'])}; 50%: {_num(k + 'q25', g['q25'])} to "
            f"{_num(k + 'q75', g['q75'])}; 90%: {_num(k + 'q05', g['q05'])} to "
            f"{_num(k + 'q95', g['q95'])}")


def _accuracy(c: dict) -> str:
    acc = c.get("accuracy") or {}
    if not acc:
        return "no loss-to-accuracy link in this fit"
    rows = []
    for task, q in acc.items():
        k = f"chosen.accuracy.{task}."
        rows.append(f"<li>{html.escape(task)}: median {_num(k + 'q50', q['q50'], '.3f')}; "
                    f"50%: {_num(k + 'q25', q['q25'], '.3f')} to {_num(k + 'q75', q['q75'], '.3f')}"
                    f"; 90%: {_num(k + 'q05', q['q05'], '.3f')} to "
                    f"{_num(k + 'q95', q['q95'], '.3f')}</li>")
    return f"<ul>{''.join(rows)}</ul>"


def _recommended(p: dict) -> str:
    c = p["chosen"]
    name = f"<b>{html.escape(c['preset'])}</b>, " if c.get("preset") else ""
    text = (f"{name}{_num('chosen.params', c['params'], '.3g')} parameters on "
            f"{_num('chosen.tokens', c['tokens'], '.3g')} tokens "
            f"({c['tokens'] / c['params']:.1f} tokens per parameter)")
    mix = p.get("mixture")
    if mix:
        text += "; mixture " + ", ".join(
            f"{html.escape(k)} {_num(f'mixture.mixture.{k}', v, '.3f')}"
            for k, v in mix["mixture"].items())
    elif p.get("pool"):
        text += f"; pool <b>{html.escape(str(p['pool']))}</b>"
    else:
        text += "; mixture as trained (this law does not read it)"
    return text


def _trust(p: dict) -> tuple[str, str]:
    t = p.get("trust") or {}
    d = t.get("distance")
    where = ("inside the fitted runs" if d is not None and d <= 0 else
             "beyond the fitted runs (log units from their hull)")
    dist = f"{_num('trust.distance', d, '.3f')}: {where}"
    if t.get("min_params") is not None:
        dist += (f". Allowed sizes {_num('trust.min_params', t['min_params'], '.3g')} to "
                 f"{_num('trust.max_params', t['max_params'], '.3g')} "
                 f"({html.escape(t.get('rule', ''))})")
    bt = t.get("backtest") or {}
    if bt.get("n"):
        cov = (f"90% intervals held {_num('trust.backtest.cov90', bt['cov90'], '.2f')}, "
               f"50% intervals {_num('trust.backtest.cov50', bt['cov50'], '.2f')} of "
               f"{bt['n']} backtest rows ({html.escape(bt.get('note', ''))})")
    else:
        cov = html.escape(bt.get("note", "no backtest"))
    return dist, cov


def _versus(p: dict) -> str:
    pr = p.get("p_beats_runner_up")
    if pr is None:
        return html.escape(p.get("why") or "no runner-up inside the allowed range")
    words = p.get("p_beats_runner_up_words") or in_words(pr)
    return (f"<b>{html.escape(words)}</b> to beat the runner-up "
            f"(P = {_num('p_beats_runner_up', pr, '.2f')}). {html.escape(p.get('why', ''))}")


def decision_card(p: dict, law: str, *, extra_warnings: list[str] | None = None) -> str:
    """One plan's decision card (HTML)."""
    c, metric = p["chosen"], p.get("metric", "loss")
    dist, cov = _trust(p)
    warns = list(p.get("warnings") or []) + list(extra_warnings or [])
    warn_html = ("<ul class='warn'>" + "".join(f"<li>{html.escape(w)}</li>" for w in warns)
                 + "</ul>") if warns else "<p class='pass'>none</p>"
    rows = [("Recommended", _recommended(p)),
            (f"Predicted {html.escape(metric)}", _interval("chosen", c, metric)),
            ("Predicted accuracy", _accuracy(c)),
            ("Extrapolation distance", dist),
            ("Backtest coverage at that distance", cov),
            ("Against the runner-up", _versus(p)),
            ("Warnings", warn_html)]
    body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows)
    title = (f"Decision: {html.escape(law)} at {p['budget_flops']:.3g} FLOPs "
             f"(objective {html.escape(p['objective'])})")
    return (f"<section class='card' data-law='{html.escape(law)}'><h2>{title}</h2>"
            f"<dl>{body}</dl></section>")
