"""The data-filtering law of Goyal et al. 2024, term by term, and a planner over filtering levels.

Per pool j (Goyal et al. 2024, "Scaling Laws for Data Filtering", the effective-utility law,
checked against the authors' ``objective.py`` / ``estimate_best_pool.py``): after D samples of
a pool of U unique samples, with passes k = 0, 1, 2, ... over it (pass k covers samples
kU .. min((k+1)U, D)),

    error = (d + (a*min(U, D)/n_ref)^b_0) * prod_{k>=1} (min((k+1)U, D) / (kU))^b_k,
    b_k = b_j * 2^(-k/tau_j)

so the irreducible d sits *inside* the repetition product (it decays too), one scale ``a`` is
shared by every pool (all pools cross at a fitted point), and b_j < 0 for an error or a loss
(the paper's sign: more negative = more utility). Passes are not capped: the product is
summed term by term to pass 32 and beyond that by Euler-Maclaurin on a Gauss-Legendre
integral (``repetition_sum``; relative error 2e-9 in float64, 3e-7 in float32).

A union of m pools (the paper's combination of pools, its default and ours): unique size
summed (U = sum_j U_j), utility averaged over the pools, and each pool's half-life
stretched by the number of pools, tau_j -> m*tau_j, with passes counted over the union:

    b_k(union) = sum_j w_j * b_j * 2^(-k/(m*tau_j)),   w_j = U_j / U (1/m for equal pools)

The rule is cited from the authors' code, not by equation number: the project's seed
(../shared/seeds/003_*.txt) holds only the paper's abstract, so the paper's numbering cannot
be checked here, and the rule is matched term by term to the authors' estimate_best_pool.py
(``c_list * num_buckets`` and ``np.mean`` of the decayed b, ``samples_per_epoch =
pool_size * num_buckets``) and checked against the numbers it prints (tests).
``rule="unstretched"`` is the named alternative without the stretch (tau_j as fitted).

Sampled coordinates (the law is the paper's; only how NUTS walks it differs): per-pool
log|b_j| and log tau_j hierarchical around pool means (two vector parameters), and the
paper's (a, d) as c0 = d + a^mean_j(b_j), the first-pass error of a mean pool, with d's
share of it (``scale_and_floor``): pools of one size pin c0 but leave a curved a-d ridge.
d's share has a prior that keeps it a modest part of the first-pass error (``D_SHARE_PRIOR``):
runs of a pass or more cannot tell d = 0.1 from d -> c0, where NUTS diverges.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

__all__ = ["N_REF", "HEAD_PASSES", "RULES", "repetition_sum", "union_error", "filtering_law",
           "pool_utilities", "scale_and_floor", "parse_pools", "check_shares",
           "FilterPlan", "filtering_levels", "plan_filtering", "plan_lines", "PAPER_POOLS"]

N_REF = 1e5  # the paper's sample normaliser: error = (a*n/1e5)^b + d
HEAD_PASSES = 32  # passes summed term by term; the rest by Euler-Maclaurin (exact to ~1e-8)
RULES = ("paper", "unstretched")

_LN2 = math.log(2.0)
# Gauss-Legendre on 4 panels x 16 nodes in log(pass): the tail integrand is smooth there
_GL_X, _GL_W = np.polynomial.legendre.leggauss(16)
_PANELS = 4


def _tail_integral(c: jnp.ndarray, lo: jnp.ndarray, hi: jnp.ndarray) -> jnp.ndarray:
    """int_lo^hi exp(-c x) log(1 + 1/x) dx for 1 <= lo <= hi, by quadrature in t = log x."""
    t0, t1 = jnp.log(lo), jnp.log(hi)
    edges = t0[..., None] + (t1 - t0)[..., None] * jnp.linspace(0.0, 1.0, _PANELS + 1)
    a, b = edges[..., :-1, None], edges[..., 1:, None]  # [..., panels, 1]
    # the nodes in the inputs' dtype: the point fit runs in float64, NUTS in float32
    gx, gw = jnp.asarray(_GL_X, t0.dtype), jnp.asarray(_GL_W, t0.dtype)
    t = 0.5 * (a + b) + 0.5 * (b - a) * gx  # [..., panels, nodes]
    x = jnp.exp(t)
    f = jnp.exp(-c[..., None, None] * x) * jnp.log1p(1.0 / x) * x  # dx = x dt
    return jnp.sum(0.5 * (b - a) * gw * f, axis=(-2, -1))


def repetition_sum(R: jnp.ndarray, T: jnp.ndarray) -> jnp.ndarray:
    """sum_{k>=1} 2^(-k/T) * log(clip(R, k, k+1) / k): the repetition exponent's weight.

    R = D/U passes (any value > 0), T the half-life in passes. Pass k's factor in the paper's
    product is (min(k+1, R)/k)^(b 2^(-k/T)), so ``log error-ratio = b * repetition_sum``.
    Terms k <= 32 are summed directly; full passes beyond by Euler-Maclaurin (integral by
    Gauss-Legendre plus the endpoint and first-derivative corrections), and the last partial
    pass exactly. No cap on passes.
    """
    R, T = jnp.broadcast_arrays(jnp.asarray(R), jnp.asarray(T))
    c = _LN2 / T
    k = jnp.arange(1, HEAD_PASSES + 1, dtype=R.dtype)
    head = jnp.sum(jnp.exp(-c[..., None] * k)
                   * jnp.log(jnp.clip(R[..., None], k, k + 1.0) / k), axis=-1)
    # beyond the head: full passes A..B and the partial pass F = floor(R) (if F > 32)
    F = jnp.floor(R)
    A = jnp.asarray(HEAD_PASSES + 1.0, R.dtype)
    B = jnp.maximum(F - 1.0, A)
    has_full = F - 1.0 >= A

    def f(x):
        return jnp.exp(-c * x) * jnp.log1p(1.0 / x)

    def df(x):
        return -c * f(x) - jnp.exp(-c * x) / (x * (x + 1.0))

    full = (_tail_integral(c, A * jnp.ones_like(B), B) + 0.5 * (f(A) + f(B))
            + (df(B) - df(A)) / 12.0)
    partial = jnp.exp(-c * F) * jnp.log(jnp.maximum(R, 1.0) / jnp.maximum(F, 1.0))
    tail = jnp.where(has_full, full, 0.0) + jnp.where(F >= A, partial, 0.0)
    return head + tail


def union_error(D, U, shares, b, tau, a, d, *, rule: str = "paper") -> jnp.ndarray:
    """Error (or loss) after D samples of a union of pools, the paper's law and combination.

    Args:
      D: samples seen; U: unique samples of the union (same units as D). Shape [...].
      shares: [..., P] each pool's share w_j = U_j / U of the union's unique samples (0: not
        in the union; one-hot for a single pool).
      b, tau: [..., P] per pool utility (< 0 for an error) and half-life in passes.
      a: scale per unit of D (the paper's a / n_ref); d: the irreducible term. Shape [...].
      rule: "paper" (half-lives stretched by the number m of pools) or "unstretched".
    Everything broadcasts (posterior draws on a leading axis, pools on the last).
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r}; use one of {RULES}")
    return _union(D, U, shares, b, tau, jnp.log(jnp.asarray(a)), d, rule)


@functools.partial(jax.jit, static_argnames="rule")
def _union(D, U, shares, b, tau, log_a, d, rule):
    D, U = jnp.asarray(D), jnp.asarray(U)
    shares, b, tau = jnp.asarray(shares), jnp.asarray(b), jnp.asarray(tau)
    R = D / U
    m = jnp.sum(shares > 0, axis=-1).astype(R.dtype)
    b0 = jnp.sum(shares * b, axis=-1)
    first = d + jnp.exp(b0 * (log_a + jnp.log(jnp.minimum(U, D))))
    T = tau * (m[..., None] if rule == "paper" else 1.0)
    log_ratio = jnp.sum(shares * b * repetition_sum(R[..., None], T), axis=-1)
    return first * jnp.exp(log_ratio)


# ---------------------------------------------------------------- the law, for NumPyro

# d's share of c0: Beta(2, 10) (mode 0.1, median 0.15, 95% below 0.36). Runs of one pass or
# more see (a, d) only through each pool's first-pass error d + (a*U_j)^b_j, so d is free
# along a ridge whose far end (d -> c0, a -> inf: nothing learnt in the first pass) fits as
# well as the truth (profile chi2 within 3 from d = 0.1 to 0.8 on the bench's data). Under
# the old flat Beta(1.5, 1.5) one chain in four walked to that end and diverged there (40
# divergences, R-hat 1.36 on the bench's seed 1). The paper does not fit d either: its
# authors pass --d 0.1 (first-pass errors ~0.8) and grid-search d in 0.02-0.15
# (ablations/finding_a.py). Runs shorter than a pass pin d and override this prior; a loss
# with a large irreducible part (language models) should set its own: --prior
# 'd_share=Beta(...)'.
D_SHARE_PRIOR = (2.0, 10.0)

# Spread over pools of log|b_j| and of log tau_j: fixed, so the hierarchy is linear in the
# sampled coordinates (z_j, b_mu). With a sampled spread, data that pin each b_j make
# (spread, z_j) a curved ridge that NUTS crosses with tiny steps (R-hat 1.02, ESS 75 on the
# paper's five pools); the learned mean still pools what the pools share.
B_SPREAD, TAU_SPREAD = 0.5, 1.0


def _pool_params(pools: Sequence[str]):
    import numpyro.distributions as dist

    from datalaws.fit.laws import Param

    # Hierarchical across pools, non-centred (the Law API gives each parameter a fixed prior):
    # log|b_j| = b_mu + B_SPREAD * z_j and log tau_j = tau_mu + TAU_SPREAD * y_j, z, y ~ N(0, 1),
    # one vector parameter each over the pools (sorted by name): the law has 6 parameters
    # whatever the number of pools, which is what the backtests' rows-per-parameter rule
    # counts (it counts the mixing laws' per-domain vectors once too). The paper's (a, d) are
    # sampled as (c0, d_share), see ``scale_and_floor``.
    return (
        Param("c0", dist.LogNormal(0.0, 1.5), "first-pass error/loss of a pool of the mean "
              "utility with D0 unique samples: d + (a*D0/D0)^mean_j(b_j)"),
        Param("d_share", dist.Beta(*D_SHARE_PRIOR), "d / c0: the irreducible part of c0 (d sits "
              "inside the repetition product, as in the paper); prior: a modest share, see "
              "D_SHARE_PRIOR"),
        Param("b_mu", dist.Normal(math.log(0.2), 1.0), "mean over pools of log|b_j|"),
        Param("b_z", dist.Normal(0.0, 1.0).expand([len(pools)]).to_event(1),
              f"per pool ({', '.join(pools)}): (log|b_j| - b_mu) / {B_SPREAD}"),
        Param("tau_mu", dist.Normal(math.log(5.0), 1.0), "mean over pools of log tau_j"),
        Param("tau_z", dist.Normal(0.0, 1.0).expand([len(pools)]).to_event(1),
              f"per pool ({', '.join(pools)}): (log tau_j - tau_mu) / {TAU_SPREAD}"),
    )


def scale_and_floor(p: Mapping, b_mean) -> tuple:
    """The paper's log a (per unit of normalised D) and d from the sampled (c0, d_share).

    Runs on pools of one size pin each pool's first-pass error d + (a*U)^b_j, so (a, d) are
    pinned along d + (a*U)^mean(b) and free along a curved ridge: log a grows faster than
    log d (a banana NUTS diverges in at its tip). Sampling c0 = d + a^mean(b) (pinned) and
    d's share of it (free) straightens the ridge into one coordinate.
    """
    d = p["d_share"] * p["c0"]
    return jnp.log((1.0 - p["d_share"]) * p["c0"]) / b_mean, d


def pool_utilities(p: Mapping, pools: Sequence[str]) -> tuple[dict, dict]:
    """b_j (< 0) and tau_j per pool from the sampled hierarchical parameters."""
    b, tau = _vectors(p)
    return ({pl: b[..., j] for j, pl in enumerate(pools)},
            {pl: tau[..., j] for j, pl in enumerate(pools)})


def _vectors(p: Mapping) -> tuple:
    """b [..., P] and tau [..., P] (pools sorted by name) from the hierarchical parameters."""
    b = -jnp.exp(jnp.asarray(p["b_mu"])[..., None] + B_SPREAD * p["b_z"])
    tau = jnp.exp(jnp.asarray(p["tau_mu"])[..., None] + TAU_SPREAD * p["tau_z"])
    return b, tau


def filtering_law(pools: Sequence[str], *, rule: str = "paper"):
    """The paper's law over ``pools`` as a datalaws Law (inputs: D, repetitions = D/U of the
    run's data, and ``w.<pool>`` shares of its unique samples; a one-pool run is one-hot)."""
    from datalaws.fit.laws import Axis, Law

    if rule not in RULES:
        raise ValueError(f"rule={rule!r}; use one of {RULES}")
    pools = sorted(pools)

    def fn(x, p):
        b, tau = _vectors(p)  # [P], or [draws, 1, P] in the predictive
        D = x["D"]
        U = D / jnp.maximum(x["repetitions"], 1e-12)
        shares = jnp.stack([x[f"w.{pl}"] for pl in pools], axis=-1)  # [n, P]
        log_a, d = scale_and_floor(p, jnp.mean(b, axis=-1))
        return _union(D, U, shares, b, tau, log_a, d, rule)

    def derived(p, s):
        log_a, d = scale_and_floor(p, jnp.mean(_vectors(p)[0], axis=-1))
        b, tau = pool_utilities(p, pools)
        return ({"a_paper": jnp.exp(log_a) * N_REF / s["D"], "d": d}
                | {f"b_{pl}": v for pl, v in b.items()} | {f"tau_{pl}": v for pl, v in tau.items()})

    stretch = "(m*tau_j)" if rule == "paper" else "tau_j"
    return Law(
        name="filtering" if rule == "paper" else f"filtering_{rule}",
        formula=f"err = (d + (a*min(U,D)/D0)^b(0)) * prod_k>=1 (min(k+1,R)/k)^b(k), R = D/U, "
                f"b(k) = sum_j w_j b_j 2^(-k/{stretch}) over the m pools in the run's data",
        inputs={"D": "tokens", "repetitions": "repetitions"}
        | {f"w.{pl}": f"pool.{pl}" for pl in pools},
        params=_pool_params(pools), fn=fn, axis="D", derived=derived,
        reference="Goyal et al. 2024 (scaling laws for data filtering): per-pool utility and "
                  "half-life, d inside the repetition product, pools combined by averaged "
                  "utility and m-fold half-life (authors' estimate_best_pool.py)",
        unscaled=("repetitions", *(f"w.{pl}" for pl in pools)),
        # budget and unique size: independent directions (D and D/U are one direction for
        # runs on one pool, so declaring both would count one extrapolation twice)
        axes=(Axis("D", {"D": 1.0}), Axis("U", {"D": 1.0, "repetitions": -1.0})))


# The authors' released fit (results/parameter_values.jsonl, tmars_imagenet1k_utility;
# error = 1 - ImageNet accuracy): five pools of 12.8M samples, d = 0.1, a = 0.025 per 1e5.
PAPER_POOLS = {"top10": (-0.16, 6.73), "top10_20": (-0.125, 8.55), "top20_30": (-0.10, 5.27),
               "top30_40": (-0.085, 2.27), "random25": (-0.12, 6.0)}  # name: (b, tau)
PAPER_A, PAPER_D, PAPER_POOL_SIZE = 0.025, 0.1, 12.8e6


# ---------------------------------------------------------------- inputs, checked

def parse_pools(text: str | None) -> dict[str, float]:
    """``--pools top10=1.28e7,top20=1.28e7`` -> unique samples per pool, in the order given
    (best first: filtering level k is the union of the first k). One clear line on bad input."""
    if not text or not text.strip():
        raise ValueError("--pools: give unique samples per pool, best first, e.g. "
                         "top10=1.28e7,top20=1.28e7")
    out: dict[str, float] = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"--pools: expected name=unique_samples, got {item.strip()!r}")
        if name in out:
            raise ValueError(f"--pools: pool {name!r} is given twice")
        try:
            size = float(value)
        except ValueError:
            raise ValueError(f"--pools: size of pool {name!r} is {value.strip()!r}, not a "
                             "number") from None
        if not math.isfinite(size) or size <= 0:
            raise ValueError(f"--pools: pool {name!r} has {value.strip()} unique samples; "
                             "each pool's size must be a positive number")
        out[name] = size
    return out


def check_shares(df, pools: Sequence[str] | None = None, *, tol: float = 1e-6) -> None:
    """Rows' ``pool.<name>`` shares must lie in [0, 1] and sum to 1 (shares of a run's unique
    samples); with ``pools``, only those pools may appear. Raises one line naming the rows."""
    from datalaws.fit.table import TableError

    cols = [c for c in df.columns if c.startswith("pool.")]
    if pools is not None:
        unknown = sorted(c[5:] for c in cols if c[5:] not in set(pools))
        if unknown:
            raise TableError(f"unknown pool(s) {unknown}; the fit knows {sorted(pools)}")
    if not cols:
        return
    w = df[cols].to_numpy(dtype=float)
    bad = ~np.isfinite(w).all(axis=1) | (w < 0).any(axis=1) | (w > 1).any(axis=1)
    off = np.abs(np.nan_to_num(w).sum(axis=1) - 1.0) > tol
    rows = np.flatnonzero(bad | off)
    if rows.size:
        i = rows[0]
        raise TableError(f"pool shares (pool.* columns) must lie in [0, 1] and sum to 1 in "
                         f"every row; row {df.index[i]} sums to {np.nan_to_num(w[i]).sum():.4g}"
                         + (f" (+{rows.size - 1} more rows)" if rows.size > 1 else ""))


# ---------------------------------------------------------------- planner: how much to filter

@dataclasses.dataclass
class FilterPlan:
    """Per budget, every filtering level's predicted loss and its posterior probability of
    being the best level; ``best`` has one row per budget."""

    candidates: pd.DataFrame
    best: pd.DataFrame

    def to_csv(self) -> str:
        return self.candidates.to_csv(index=False)

    def to_json(self) -> str:
        return json.dumps({"best": self.best.to_dict(orient="records"),
                           "candidates": self.candidates.to_dict(orient="records")}, indent=1)


def filtering_levels(pools: Mapping[str, float]) -> list[tuple[str, dict[str, float], float]]:
    """Level k = the union of the k best pools (``pools`` ordered best first): its label,
    each pool's share of its unique samples, and its unique samples."""
    names, levels = list(pools), []
    for k in range(1, len(names) + 1):
        chosen = names[:k]
        unique = float(sum(pools[n] for n in chosen))
        levels.append(("+".join(chosen), {n: pools[n] / unique for n in chosen}, unique))
    return levels


def plan_filtering(result, budgets: Sequence[float], pools: Mapping[str, float], *,
                   seed: int = 0) -> FilterPlan:
    """For each budget (samples or tokens seen), each filtering level's posterior loss, and
    the level most likely to be best (the one with the lowest posterior median)."""
    from datalaws.fit.api import predictive_draws

    fit_pools = list(result.law.pools)
    if not fit_pools:
        raise ValueError(f"law {result.law.name!r} has no pools; fit the filtering law")
    unknown = [p for p in pools if p not in fit_pools]
    if unknown:
        raise ValueError(f"--pools: pool(s) {unknown} were not in the fit; it has {fit_pools}")
    cols = result.columns
    if "D" not in cols:
        raise ValueError("this fit was made with an older filtering law (input n, shared "
                         "half-life); refit it with `datalaws fit filtering`")
    levels = filtering_levels(pools)
    rows = []
    for D in budgets:
        for _, shares, unique in levels:
            rows.append({cols["D"]: D, cols["repetitions"]: D / unique}
                        | {f"pool.{p}": shares.get(p, 0.0) for p in fit_pools})
    frame = pd.DataFrame(rows)
    draws = predictive_draws(result, frame, seed=seed)
    S, B, L = draws["loss_law"].shape[0], len(budgets), len(levels)
    law = draws["loss_law"].reshape(S, B, L)
    obs = draws["loss"].reshape(S, B, L)
    winner = np.argmin(law, axis=2)  # [S, B]
    p_best = np.stack([np.mean(winner == j, axis=0) for j in range(L)], axis=1)  # [B, L]
    q = np.quantile(law, [0.05, 0.5, 0.95], axis=0)  # [3, B, L]
    oq = np.quantile(obs, [0.05, 0.95], axis=0)
    cand = pd.DataFrame([
        {"budget": D, "level": label, "n_pools": j + 1, "unique": unique,
         "passes": D / unique, "loss_q05": q[0, i, j], "loss_q50": q[1, i, j],
         "loss_q95": q[2, i, j], "run_q05": oq[0, i, j], "run_q95": oq[1, i, j],
         "p_best": p_best[i, j]}
        for i, D in enumerate(budgets) for j, (label, _, unique) in enumerate(levels)])
    best_j = np.argmin(q[1], axis=1)
    cand["best"] = [best_j[i] == j for i in range(B) for j in range(L)]
    best = cand[cand.best].drop(columns="best").reset_index(drop=True)
    return FilterPlan(candidates=cand, best=best)


def plan_lines(fp: FilterPlan) -> list[str]:
    """What ``datalaws plan`` prints: each budget's best level with P(best), then the table."""
    lines = []
    for _, r in fp.best.iterrows():
        others = fp.candidates[(fp.candidates.budget == r["budget"]) & ~fp.candidates.best]
        runner = others.sort_values("loss_q50").iloc[0] if len(others) else None
        lines.append(f"budget {r['budget']:.4g}: filter to {r['level']} ({r['unique']:.3g} "
                     f"unique, {r['passes']:.3g} passes), P(best) = {r['p_best']:.2f}, loss "
                     f"{r['loss_q50']:.4f} [90%: {r['loss_q05']:.4f}-{r['loss_q95']:.4f}]"
                     + (f"; runner-up {runner['level']} {runner['loss_q50']:.4f}"
                        if runner is not None else ""))
    cols = ["budget", "level", "passes", "loss_q05", "loss_q50", "loss_q95", "p_best"]
    lines += ["", fp.candidates[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}")]
    return lines
