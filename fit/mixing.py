"""Ye et al. 2024's data mixing laws, for 2 to 20+ training domains.

Per evaluation domain i the paper's law is ``L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)`` over
the training proportions r (on the simplex). datalaws samples the same family as

    L_i(r) = e_mid_i + (exp(kappa_i * g_i) - 1) / kappa_i,   g_i = sum_j beta_ij (r_j - 1/J)

``e_mid_i`` is the loss at the uniform mixture, ``beta_ij`` the *linear* effect of domain j
(what the data pin down first), ``kappa_i`` in (0, 50) the curvature (k_i > 0: convex, as the
paper's law). ``c + k exp(t . r)`` trades k
against the size of t along a ridge when the curvature is mild (exp(x) ~ 1 + x); here the
curvature is one coordinate and ``kappa -> 0`` is the linear law, smooth, with no ridge. The
paper's constants are derived: ``t_ij = kappa_i beta_ij``, ``c_i = e_mid_i - 1/kappa_i``,
``k_i = exp(-t_i . u) / kappa_i``. Since ``sum_j r_j = 1`` the effects are defined up to a
common shift; no reference domain is singled out, the shrinkage prior centres them.

Hierarchical shrinkage (per-domain law, 3+ evaluation domains): ``beta_ij ~ N(0, tau_j)``,
one scale per training domain shared by every evaluation domain (``tau_j ~ LogNormal``),
so 20 domains x 20 evaluation domains (~420 effects) are one pooled regression, not 420 free
constants. It is centred (``PooledEffects``: the effects and log tau in one vector site):
with hundreds of mixtures per domain the effects are pinned by the data, and the
non-centred ``tau_j * z_ij`` would leave NUTS a curved ridge per domain to crawl along.
With one or two loss series there is too little to learn a scale from: the effects are
``z`` themselves, shrunk by a fixed ``N(0, 1)`` (nats per unit of proportion).

With 2+ evaluation domains each has its own noise: ``sigma`` and ``nu`` [E], one per
domain (``Law.noise_groups``), so on per-domain rows (one-hot ``eval.<domain>``, no size
terms) the domains share nothing but the effect scales tau, and those are fixed at the least
squares' balanced values when the domains are sampled one at a time
(``datalaws.fit.blocks``: each domain its own step size; jointly, RegMix's 13 losses took
over an hour).

Size terms ``a (N/N0)^-alpha`` and ``b (D/D0)^-beta`` enter only for the inputs the table
varies (``sizes``); at one size the law has none and cannot be asked about another.

The implicit form (Ye eq. 4) for an overall loss of unknown composition is a sum of K such
terms (latent domains) with positive curvatures ordered ``kappa_1 < kappa_2 < ...``
(label switching removed); ``choose_latent`` picks K by cross-validation over mixtures.
Terms 2+ are sampled by their exponent coefficients ``t = kappa beta`` rather than ``beta``
(``datalaws.fit.mixing_prior``: a strongly curved term's shape is t, and beta slides with
kappa along a banana).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpyro.distributions as dist
import pandas as pd

from datalaws.fit.laws import Axis, Law, Param
from datalaws.fit.mixing_checks import (  # noqa: F401  (re-exported: the mixing API)
    MIX_TOL,
    check_eval_weights,
    check_mixtures,
    check_unknown_mix,
)
from datalaws.fit.mixing_prior import PooledEffects, effects_prior
from datalaws.fit.table import TableError

__all__ = ["mixing_law", "mixing_domains_law", "mixing_implicit_law", "exp_curve", "PooledEffects",
           "balance_point",
           "split_by_domain", "join_domains", "identifiable", "latent_count", "check_rows",
           "check_mixtures",
           "check_eval_weights", "check_unknown_mix", "SIZE_ROLES", "MIX_TOL"]

SIZE_ROLES = ("N", "D")
KAPPA_MAX = 50.0  # largest curvature: t_ij up to 50x the linear effect beta_ij


def _ln(median: float, s: float) -> dist.Distribution:
    return dist.LogNormal(math.log(median), s)


def _kappa_prior() -> dist.Distribution:
    # k > 0 (a convex law, as in the paper) and bounded: least squares can otherwise chase a
    # step (kappa -> 1e5, t -> 0 with kappa*t finite) that no posterior would believe, and
    # a start there makes the sampler's first losses negative
    return dist.Uniform(0.0, KAPPA_MAX)


def exp_curve(g, kappa):
    """``(exp(kappa g) - 1) / kappa``, equal to g at kappa = 0 and smooth through it; the
    exponent is capped at 60 (beyond, float32 overflows: a loss of e^60 is no answer)."""
    x = jnp.minimum(kappa * g, 60.0)
    small = jnp.abs(x) < 1e-5
    xs = jnp.where(small, 1.0, x)
    return g * jnp.where(small, 1.0 + 0.5 * x, jnp.expm1(xs) / xs)


def _vec(d: dist.Distribution, n: int) -> dist.Distribution:
    """``n`` independent copies of ``d`` as one vector site (one NUTS site, not n)."""
    return d.expand([n]).to_event(1)


def _front(v, shape=None):
    """A vector parameter [*pb, n] as [n, *pb] (or ``shape`` + pb): series first."""
    v = jnp.moveaxis(jnp.asarray(v), -1, 0)
    return v if shape is None else v.reshape(tuple(shape) + v.shape[1:])


def _positive(loss):
    # a loss below 0 is outside the law's meaning; a tiny floor keeps log(loss) finite, so
    # the sampler sees a terrible fit there instead of a NaN
    return jnp.maximum(loss, 1e-6)


def _stack(x, names):
    return jnp.stack([jnp.asarray(x[n]) for n in names])


def _lift(a, nd):
    """[E, *s] -> [E, 1, ..., *s] with ``nd`` trailing dims (batch shapes align right)."""
    return a.reshape(a.shape[:1] + (1,) * (nd - (a.ndim - 1)) + a.shape[1:])


def _effects(x, p, domains, series: int):
    """``g`` [E, *batch]: linear effects ``sum_j beta_ej (r_j - u)`` for every series e; the
    effects are the first E*J entries of the vector ``z`` [*pb, E*J (+ J log scales)]."""
    u = 1.0 / len(domains)
    R = _stack(x, [f"r.{d}" for d in domains]) - u  # [J, *xb]
    Z = _front(p["z"])[: series * len(domains)]
    return jnp.einsum("ej...,j...->e...", Z.reshape((series, len(domains)) + Z.shape[1:]), R)


def _size_params(sizes: Sequence[str]) -> tuple[Param, ...]:
    out = ()
    if "N" in sizes:
        out += (Param("a", _ln(0.5, 1.0), "model-size term at the reference size N0 (nats)"),
                Param("alpha", _ln(0.35, 0.5), "model-size exponent"))
    if "D" in sizes:
        out += (Param("b", _ln(0.5, 1.0), "data term at the reference tokens D0 (nats)"),
                Param("beta", _ln(0.35, 0.5), "data exponent"))
    return out


def _size_terms(x, p, sizes):
    out = 0.0
    if "N" in sizes:
        out = out + p["a"] * x["N"] ** -p["alpha"]
    if "D" in sizes:
        out = out + p["b"] * x["D"] ** -p["beta"]
    return out


def _size_derived(p, s, sizes):
    out = {}
    if "N" in sizes:
        out["A"] = p["a"] * s["N"] ** p["alpha"]
    if "D" in sizes:
        out["B"] = p["b"] * s["D"] ** p["beta"]
    return out


def _axes(domains, sizes) -> tuple[Axis, ...]:
    return (tuple(Axis(r, {r: 1.0}) for r in sizes)
            + tuple(Axis(f"mix.{d}", {f"r.{d}": 1.0}, log=False) for d in domains))


def _inputs(domains, sizes) -> dict[str, str]:
    cols = {"N": "params", "D": "tokens"}
    return {r: cols[r] for r in sizes} | {f"r.{d}": f"mix.{d}" for d in domains}


def _size_formula(sizes) -> str:
    return "".join({"N": " + A/N^alpha", "D": " + B/D^beta"}[r] for r in sizes)


def _common(domains, sizes) -> dict:
    return {"axis": sizes[0] if sizes else f"r.{domains[0]}", "axes": _axes(domains, sizes),
            "unscaled": tuple(f"r.{d}" for d in domains), "minor_modes": True}


def _check(domains, sizes, what):
    domains = sorted(domains)
    if len(domains) < 2:
        raise ValueError(f"the {what} law needs at least two mix.<domain> columns; got {domains}")
    bad = set(sizes) - set(SIZE_ROLES)
    if bad:
        raise ValueError(f"sizes {sorted(bad)}: the mixing laws take N and/or D")
    return domains, tuple(r for r in SIZE_ROLES if r in sizes)


def _z_param(domains, series: Sequence[str], pooled: bool = False, latent: int = 1,
             scales=None) -> Param:
    """The effects of every loss series, K = ``latent`` rows per series: the first its linear
    effects beta, the others (more curved) their exponent coefficients t (mixing_prior)."""
    what = (f"of training on each of {len(domains)} domains ({', '.join(domains)}) for each "
            f"of {', '.join(series)}")
    kinds = [int(k % latent > 0) for k in range(len(series))]
    kind = "linear effects (nats)" + (", exponent coefficients t for terms 2+" if latent > 1
                                      else "")
    prior = effects_prior(len(series), len(domains), kinds, pooled, scales)
    if pooled:
        return Param("z", prior, f"{kind} {what}, then log tau, their scale per training "
                     "domain (per kind)")
    return Param("z", prior, f"{kind} {what}")


def mixing_law(domains: Sequence[str], sizes: Sequence[str] = SIZE_ROLES) -> Law:
    """The paper's law for one (overall) loss: ``L = c + k exp(t . r)`` (+ size terms)."""
    domains, sizes = _check(domains, sizes, "mixing")

    def fn(x, p):
        g = _effects(x, p, domains, 1)[0]
        return _positive(p["e_mid"] + exp_curve(g, p["kappa"]) + _size_terms(x, p, sizes))

    def derived(p, s):
        # t is defined up to a common shift (proportions sum to 1): report it centred, so
        # c + k exp(t . r) with k = 1/kappa
        t = _front(p["z"]) * p["kappa"]
        t = t - t.mean(axis=0)
        return (_size_derived(p, s, sizes) | {"c": p["e_mid"] - 1.0 / p["kappa"],
                                              "k": 1.0 / p["kappa"]}
                | {f"t_{j}": t[k] for k, j in enumerate(domains)})

    params = (Param("e_mid", _ln(3.0, 1.0), "loss at the uniform mixture (beyond size terms)"),
              Param("kappa", _kappa_prior(), "curvature: 1/k of the exp term (0: linear)"),
              _z_param(domains, ["the loss"]), *_size_params(sizes))
    return Law(name="mixing", formula="L = c + k*exp(sum_j t_j r_j)" + _size_formula(sizes),
               inputs=_inputs(domains, sizes), params=params, fn=fn, derived=derived,
               reference="Ye et al. 2024 (data mixing laws, eq. 1)", **_common(domains, sizes))


def _latent_kappas(p, name1: str, series: int, latent: int):
    """Curvatures [series, K, *pb]: ``kappa1`` per series, then positive ``gaps``, so each
    series' latent terms stay ordered (label switching removed)."""
    k1 = _front(p[name1]).reshape((series,) + jnp.shape(_front(p[name1]))[1:])
    if latent == 1:
        return k1[:, None]
    gaps = _front(p["gaps"], (series, latent - 1))
    return jnp.concatenate([k1[:, None], k1[:, None] + jnp.cumsum(gaps, axis=1)], axis=1)


def _domains_by_draw(x, R, Z, e_mid, kap, evals: Sequence[str], t_coords: bool):
    """The per-domain law over draws, one evaluation domain at a time (bounded memory)."""
    J, K = R.shape[0], kap.shape[1]
    total = 0.0
    for i, ev in enumerate(evals):
        loss = e_mid[i]
        for k in range(K):
            s = (i * K + k) * J
            g = jnp.einsum("j...,j...->...", Z[s:s + J], R)
            t_row = t_coords and k > 0
            loss = loss + exp_curve(g / kap[i, k] if t_row else g, kap[i, k])
        total = total + jnp.asarray(x[f"e.{ev}"]) * loss
    return total


def mixing_domains_law(domains: Sequence[str], evals: Sequence[str],
                       sizes: Sequence[str] = SIZE_ROLES, latent: int = 1,
                       t_coords: bool = True, effect_scales=None) -> Law:
    """The per-domain law: one ``c_i + k_i exp(t_i . r)`` per evaluation domain i, pooled.

    Parameters are vectors over evaluation domains (sorted): ``e_mid`` [E], ``kappa`` [E],
    ``z`` [E*J] (row i holds domain i's effects), ``tau`` [J] with 3+ evaluation domains.
    A row's ``eval.<i>`` weights say what its loss measures: one-hot for a per-domain loss
    (``loss.<i>`` columns are expanded to such rows), a known composition s for an overall
    loss ``L = sum_i s_i L_i``. With ``latent`` K > 1 each domain's law is Ye's implicit form
    (eq. 4: a validation domain is itself a mixture of latent domains), ``c_i + sum_k
    q_ik exp(t_ik . r)``, curvatures ``kappa1`` [E] and ordered ``gaps`` [E*(K-1)], effects
    ``z`` [E*K*J] (row i*K + k; rows k >= 2 hold t = kappa beta, see mixing_prior).

    The loss is accumulated one evaluation domain at a time: draws x rows x domains at once
    is what made a 20 x 20 prediction take 13 GB. ``t_coords=False`` holds every row as
    linear effects: least squares searches there (``mixing_ls``), NUTS samples terms 2+ by t.
    ``effect_scales`` [kinds, J]: fixed effect scales tau in place of pooled ones (one
    domain sampled alone, ``datalaws.fit.blocks``).
    """
    domains, sizes = _check(domains, sizes, "mixing_domains")
    evals = sorted(evals)
    if not evals:
        raise ValueError("mixing_domains needs >= 1 eval.<domain> (or loss.<domain>) column")
    if latent < 1:
        raise ValueError(f"mixing_domains needs >= 1 latent term per domain; got {latent}")
    E, J, K = len(evals), len(domains), latent
    # per-domain scales need several evaluation domains to learn from
    pooled = E >= 3 and effect_scales is None
    kname = "kappa" if K == 1 else "kappa1"

    def fn(x, p):
        R = _stack(x, [f"r.{d}" for d in domains]) - 1.0 / J  # [J, *xb]
        Z, e_mid = _front(p["z"]), _front(p["e_mid"])
        kap = _latent_kappas(p, kname, E, K)
        if Z.ndim == 1:  # one parameter set (the sampler, least squares): one matmul
            total = _domains_flat(x, R, Z, e_mid, kap, evals, t_coords)
        else:  # draws: [E, draws, rows] at once is what made 20 x 20 take 13 GB (the
            # predictive also hands over at most 500 draws at a time: posterior_predictive)
            total = _domains_by_draw(x, R, Z, e_mid, kap, evals, t_coords)
        return _positive(total + _size_terms(x, p, sizes))

    derived = _domains_derived(domains, evals, sizes, K, pooled)
    params = _domains_params(domains, evals, K, pooled, t_coords, effect_scales)
    latent_txt = "" if K == 1 else f", {K} latent terms each (eq. 4)"
    return Law(
        name="mixing_domains" + ("" if K == 1 else str(K)),
        inputs=_inputs(domains, sizes) | {f"e.{i}": f"eval.{i}" for i in evals},
        formula=("L = sum_i s_i (c_i + k_i*exp(sum_j t_ij r_j))" if K == 1 else
                 f"L = sum_i s_i (c_i + sum_k<={K} q_ik*exp(sum_j t_ikj r_j))")
        + _size_formula(sizes),
        params=(*params, *_size_params(sizes)), fn=fn, derived=derived,
        noise_groups=tuple(f"e.{i}" for i in evals) if E >= 2 else (),
        reference="Ye et al. 2024 (data mixing laws, eq. 1 per domain, eq. 3 explicit "
                  "composition" + latent_txt + ")",
        **(_common(domains, sizes) | {"unscaled": tuple(
            f"r.{d}" for d in domains) + tuple(f"e.{i}" for i in evals)}))


def _domains_flat(x, R, Z, e_mid, kap, evals, t_coords=True):
    """The per-domain law for one parameter set: every domain's loss [E, *xb] in one
    contraction (terms 2+ hold t = kappa beta), weighted by the rows' ``e.<domain>``."""
    E, K, J = kap.shape[0], kap.shape[1], R.shape[0]
    lift = (1,) * (R.ndim - 1)
    S = jnp.einsum("ekj,j...->ek...", Z[: E * K * J].reshape(E, K, J), R)
    kb = kap.reshape((E, K) + lift)
    div = jnp.where(jnp.arange(K).reshape((1, K) + lift) == 0, 1.0, kb) if t_coords else 1.0
    loss = e_mid.reshape((E,) + lift) + jnp.sum(exp_curve(S / div, kb), axis=1)
    W = jnp.stack([jnp.broadcast_to(jnp.asarray(x[f"e.{ev}"]), R.shape[1:]) for ev in evals])
    return jnp.sum(W * loss, axis=0)


def _domains_derived(domains: Sequence[str], evals: Sequence[str], sizes: Sequence[str],
                     K: int, pooled: bool):
    """The per-domain law's derived quantities: each domain's floor c_i (and k_i for K = 1),
    the pooled effect scales tau_j, and the size terms'."""
    E, J = len(evals), len(domains)
    kname = "kappa" if K == 1 else "kappa1"

    def derived(p, s):
        out = _size_derived(p, s, sizes)
        Z = _front(p["z"])
        if pooled:  # per kind: linear effects (tau_j), exponent coefficients (tau_t_j)
            for g, stem in enumerate(["tau_", "tau_t_"][: 1 + (K > 1)]):
                out |= {f"{stem}{j}": jnp.exp(Z[E * K * J + g * J + k])
                        for k, j in enumerate(domains)}
        Z = Z[: E * K * J].reshape((E, K, J) + Z.shape[1:])
        e_mid, kap = _front(p["e_mid"]), _latent_kappas(p, kname, E, K)
        for k, i in enumerate(evals):
            out[f"c_{i}"] = e_mid[k] - jnp.sum(1.0 / kap[k], axis=0)
            if K == 1:
                out[f"k_{i}"] = jnp.exp(-kap[k, 0] * Z[k, 0].mean(axis=0)) / kap[k, 0]
        return out

    return derived


def _domains_params(domains: Sequence[str], evals: Sequence[str], K: int, pooled: bool,
                    t_coords: bool = True, scales=None) -> list[Param]:
    """The per-domain law's parameters: loss at the uniform mixture, curvatures (ordered
    latent terms when K > 1) and the mixture effects, all vectors over evaluation domains."""
    E = len(evals)
    params = [Param("e_mid", _vec(_ln(3.0, 1.0), E), "loss on each evaluation domain at the "
                    f"uniform mixture ({', '.join(evals)})")]
    if K == 1:
        params.append(Param("kappa", _vec(_kappa_prior(), E), "curvature of each domain's law"))
    else:
        params += [Param("kappa1", _vec(_kappa_prior(), E), "curvature of each domain's "
                         "first latent term"),
                   Param("gaps", _vec(_kappa_prior(), E * (K - 1)), "kappa_{k+1} - kappa_k "
                         "(> 0) per domain: the latent terms stay ordered")]
    series = [f"{i}/{k + 1}" if K > 1 else i for i in evals for k in range(K)]
    return params + [_z_param(domains, series, pooled, K if t_coords else 1, scales)]


def mixing_implicit_law(domains: Sequence[str], latent: int = 2,
                        sizes: Sequence[str] = SIZE_ROLES, t_coords: bool = True) -> Law:
    """Ye et al.'s implicit form for an overall loss: K latent domains.

    ``L = c + sum_k q_k exp(t_k . r)`` (+ size terms), each term sampled like the per-domain
    law with a positive curvature ``kappa_k = 1/m_k``, ordered ``kappa_1 < kappa_2 < ...``
    (``kappa_k = kappa1 + gaps_1 + ... + gaps_{k-1}``).
    """
    domains, sizes = _check(domains, sizes, "mixing_implicit")
    if latent < 1:
        raise ValueError(f"mixing_implicit needs >= 1 latent domain; got {latent}")

    def kappas(p):  # [K, *pb]
        k1 = jnp.asarray(p["kappa1"])[None]
        if latent == 1:
            return k1
        return jnp.concatenate([k1, k1 + jnp.cumsum(_front(p["gaps"]), axis=0)])

    def fn(x, p):
        g = _effects(x, p, domains, latent)  # latent 2+: t . (r - u), t = kappa beta
        kap = _lift(kappas(p), g.ndim - 1)
        if t_coords:
            g = g / jnp.concatenate([jnp.ones_like(kap[:1]), kap[1:]])
        return _positive(p["e_mid"] + jnp.sum(exp_curve(g, kap), axis=0)
                         + _size_terms(x, p, sizes))

    def derived(p, s):
        return _size_derived(p, s, sizes) | {"c": p["e_mid"] - jnp.sum(1.0 / kappas(p), 0)}

    params = [Param("e_mid", _ln(3.0, 1.0), "loss at the uniform mixture"),
              Param("kappa1", _kappa_prior(), "curvature of latent 1 (1/its scale m_1)")]
    if latent > 1:
        params.append(Param("gaps", _vec(_kappa_prior(), latent - 1),
                            "kappa_{k+1} - kappa_k (> 0): the latent domains stay ordered"))
    params.append(_z_param(domains, [f"latent {k}" for k in range(1, latent + 1)],
                           latent=latent if t_coords else 1))
    return Law(
        name=f"mixing_implicit{latent}",
        formula="L = c + sum_k q_k*exp(sum_j t_kj r_j), latent domains ordered by curvature"
                + _size_formula(sizes),
        inputs=_inputs(domains, sizes), params=(*params, *_size_params(sizes)), fn=fn,
        derived=derived, reference="Ye et al. 2024 (data mixing laws, eq. 4, implicit "
                                   "composition)", **_common(domains, sizes))


# ---------------------------------------------------------------- what the data identify

def latent_count(law: Law) -> int:
    """K, the latent terms per loss series: ``mixing_implicitK`` (plain: 2),
    ``mixing_domainsK`` (plain: 1), 1 for the one-loss law."""
    for stem, default in (("mixing_implicit", 2), ("mixing_domains", 1)):
        if law.name.startswith(stem):
            return int(law.name[len(stem):] or default)
    return 1


def identifiable(law: Law) -> int:
    """Parameters one loss series identifies: c, k and J - 1 effects per series (a common
    shift of the effects is not identified), plus size terms."""
    J = len(law.domains)
    per = (J + 1) * latent_count(law)
    sizes = sum(r in law.inputs for r in SIZE_ROLES)
    return per + 2 * sizes


def check_rows(law: Law, df: pd.DataFrame) -> None:
    """Refuse a table with fewer distinct mixtures (or rows) than the law can identify."""
    mix_cols = [f"mix.{d}" for d in law.domains]
    need = identifiable(law) + 1
    mixtures = len(df.drop_duplicates(subset=[c for c in mix_cols if c in df.columns]))
    sizes = [r for r in SIZE_ROLES if r in law.inputs]
    unit = "mixtures" if not sizes else "distinct mixture/size rows"
    have = mixtures if not sizes else len(df.drop_duplicates(
        subset=[c for c in mix_cols + [law.inputs[r] for r in sizes] if c in df.columns]))
    if have < need:
        what = "per evaluation domain " if law.evals else ""
        raise TableError(f"law {law.name!r} identifies {need - 1} parameters {what}"
                         f"(c, k, {len(mix_cols) - 1} mixture effects"
                         + (f", size terms for {'/'.join(sizes)}" if sizes else "")
                         + f"); fit it on at least {need} {unit} (got {have})")


# least squares in linear-effect coordinates (re-exported: datalaws.fit.infer calls them here)
from datalaws.fit.mixing_ls import balance_point, join_domains, split_by_domain  # noqa: E402
