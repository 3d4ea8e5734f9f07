"""The law library: each law is a pure ``jax.numpy`` function plus the spec of its parameters.

A law maps *normalised* inputs and parameters to a predicted loss. Inputs are divided by a
reference value of the data (the geometric mean, stored with the fit) before they reach the
law, so ``A / N**alpha`` is written ``a * (N/N0)**-alpha``: ``a`` is the loss term at a typical
model size and is nearly uncorrelated with ``alpha``, which keeps NUTS trees shallow. The
published constants (``A = a * N0**alpha``) are reported as derived quantities.

Every law also names the input along which it extrapolates (``axis``). Beyond the data the
predictive carries a discrepancy term (see ``datalaws.fit.discrepancy``):

    sd(log L) = sqrt(sigma**2 + (k * d)**2),   d = max(0, log(x / x_max_fit))

with ``k`` learned by size-ordered backtesting on the training rows.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Callable, Mapping, Sequence

import jax.numpy as jnp
import numpyro.distributions as dist

__all__ = [
    "Param",
    "Law",
    "LAWS",
    "get_law",
    "mixing_law",
    "mixing_domains_law",
    "mixing_implicit_law",
    "filtering_law",
    "parse_prior",
    "NOISE_PRIORS",
    "DISCREPANCY_FORM",
    "Axis",
]

Array = jnp.ndarray

DISCREPANCY_FORM = ("log L_true = log L_law + k*d*z, z ~ N(0, 1): d = Euclidean distance from "
                    "the convex hull of the fitted runs in the law's axes (log scale; mixture "
                    "proportions linear); k has a posterior from rolling-origin backtests "
                    "along each axis (default prior where none is possible)")


@dataclasses.dataclass(frozen=True)
class Param:
    """One law parameter: its prior (on the scale the law uses) and what it means."""

    name: str
    prior: dist.Distribution
    meaning: str


@dataclasses.dataclass(frozen=True)
class Axis:
    """A direction a law extrapolates along: ``log(prod_r x_r ** powers[r])`` of raw inputs,
    or (``log=False``) the plain value of one input, e.g. a mixture proportion."""

    name: str
    powers: Mapping[str, float]
    log: bool = True


def _axes(**powers: Mapping[str, float]) -> tuple[Axis, ...]:
    return tuple(Axis(name, p) for name, p in powers.items())


_ND_AXES = _axes(N={"N": 1.0}, D={"D": 1.0})


def _simplex_axes(domains: Sequence[str]) -> tuple[Axis, ...]:
    return tuple(Axis(f"mix.{d}", {f"r.{d}": 1.0}, log=False) for d in domains)


@dataclasses.dataclass(frozen=True)
class Law:
    """A scaling law: ``fn(x, p) -> loss`` with x normalised inputs and p named parameters."""

    name: str
    formula: str
    inputs: Mapping[str, str]  # role -> default table column, e.g. {"N": "params"}
    params: tuple[Param, ...]
    fn: Callable[[Mapping[str, Array], Mapping[str, Array]], Array]
    axis: str  # the input role along which predictions extrapolate (discrepancy distance)
    reference: str  # paper the formula is taken from
    # natural-scale constants from the fitted ones and the input scales (e.g. A = a*N0^alpha)
    derived: Callable[[Mapping[str, Array], Mapping[str, float]], dict[str, Array]] = (
        lambda p, s: {})
    unscaled: tuple[str, ...] = ()  # input roles that are not divided by a reference value
    # every direction the law extrapolates along: the discrepancy grows with the distance of a
    # point from the hull of the fitted runs in these coordinates (datalaws.fit.discrepancy)
    axes: tuple[Axis, ...] = ()

    def with_priors(self, overrides: Mapping[str, dist.Distribution]) -> Law:
        names = {p.name for p in self.params}
        unknown = set(overrides) - names
        if unknown:
            raise ValueError(f"law {self.name!r} has no parameter(s) {sorted(unknown)}; "
                             f"it has {sorted(names)}")
        params = tuple(dataclasses.replace(p, prior=overrides.get(p.name, p.prior))
                       for p in self.params)
        return dataclasses.replace(self, params=params)


def _lognormal(median: float, s: float) -> dist.Distribution:
    return dist.LogNormal(math.log(median), s)


# Noise model on log loss, shared by every law: the Student-t scale and degrees of freedom.
NOISE_PRIORS: dict[str, dist.Distribution] = {
    "sigma": dist.HalfNormal(0.1),  # sd of log loss between runs at the same (N, D)
    # Student-t degrees of freedom minus 2 (Juárez & Steel 2010's Gamma(2, 0.1), shifted):
    # nu > 2 keeps every predictive mean and variance finite
    "nu": dist.Gamma(2.0, 0.1),
}


def _p_E() -> Param:
    return Param("E", _lognormal(2.0, 0.6), "irreducible loss (nats/token)")


def _size_params() -> tuple[Param, ...]:
    return (
        Param("a", _lognormal(0.5, 1.0), "model-size term at the reference size N0 (nats)"),
        Param("alpha", _lognormal(0.35, 0.5), "model-size exponent"),
        Param("b", _lognormal(0.5, 1.0), "data term at the reference tokens D0 (nats)"),
        Param("beta", _lognormal(0.35, 0.5), "data exponent"),
    )


def _chinchilla(x, p):
    return p["E"] + p["a"] * x["N"] ** -p["alpha"] + p["b"] * x["D"] ** -p["beta"]


def _chinchilla_derived(p, s):
    return {"A": p["a"] * s["N"] ** p["alpha"], "B": p["b"] * s["D"] ** p["beta"]}


CHINCHILLA = Law(
    name="chinchilla",
    formula="L = E + A/N^alpha + B/D^beta",
    inputs={"N": "params", "D": "tokens"},
    params=(_p_E(), *_size_params()),
    fn=_chinchilla,
    axis="N",
    axes=_ND_AXES,
    reference="Hoffmann et al. 2022, eq. 10 (Approach 3)",
    derived=_chinchilla_derived,
)


def _quality_params() -> tuple[Param, ...]:
    return (
        Param("gamma", dist.Normal(0.0, 1.0), "diversity exponent of Q (0: no effect)"),
        Param("delta", dist.Normal(0.0, 1.0), "syntheticity exponent of Q (0: no effect)"),
    )


def _quality_power(x, p):
    q = x["diversity"] ** p["gamma"] * x["syntheticity"] ** p["delta"]
    return p["E"] + p["a"] * x["N"] ** -p["alpha"] + p["b"] * (x["D"] * q) ** -p["beta"]


def _quality_exp(x, p):
    q = jnp.exp(p["gamma"] * (x["diversity"] - 1.0) + p["delta"] * (x["syntheticity"] - 1.0))
    return p["E"] + p["a"] * x["N"] ** -p["alpha"] + p["b"] * (x["D"] * q) ** -p["beta"]


_QUALITY_INPUTS = {"N": "params", "D": "tokens", "diversity": "diversity",
                   "syntheticity": "syntheticity"}

QUALITY = Law(
    name="quality",
    formula="L = E + A/N^alpha + B/D_eff^beta, D_eff = D*Q, "
            "Q = (diversity/d0)^gamma * (syntheticity/s0)^delta",
    inputs=_QUALITY_INPUTS,
    params=(_p_E(), *_size_params(), *_quality_params()),
    fn=_quality_power,
    axis="N",
    axes=_ND_AXES,
    reference="Chang et al. 2024 (effective training tokens); Q's form is datalaws' choice",
    derived=_chinchilla_derived,
)

QUALITY_EXP = dataclasses.replace(
    QUALITY,
    name="quality_exp",
    formula="L = E + A/N^alpha + B/D_eff^beta, D_eff = D*Q, "
            "Q = exp(gamma*(diversity/d0 - 1) + delta*(syntheticity/s0 - 1))",
    fn=_quality_exp,
)


def _overtrain(x, p):
    m = x["D"] / x["N"]  # tokens per parameter, relative to the reference ratio
    c = x["N"] * x["D"]  # compute 6ND relative to 6*N0*D0
    return p["E"] + (p["a"] * m ** p["eta"] + p["b"] * m ** -p["eta"]) * c ** -p["eta"]


OVERTRAIN = Law(
    name="overtrain",
    formula="L = E + (a*M^eta + b*M^-eta) * C^-eta, M = D/N, C = 6ND",
    inputs={"N": "params", "D": "tokens"},
    params=(
        _p_E(),
        Param("a", _lognormal(0.3, 1.0), "over-parameterised term at the reference M0, C0"),
        Param("b", _lognormal(0.3, 1.0), "over-trained term at the reference M0, C0"),
        Param("eta", _lognormal(0.17, 0.5), "compute exponent"),
    ),
    fn=_overtrain,
    axis="N",
    axes=_axes(C={"N": 1.0, "D": 1.0}, M={"D": 1.0, "N": -1.0}),
    reference="Gadre et al. 2024, eq. 4",
)


def _data_constrained(x, p):
    # Muennighoff et al. 2023: repeated tokens are worth less; R = epochs - 1 repetitions.
    u, r = x["U"], jnp.maximum(x["repetitions"] - 1.0, 0.0)
    d_eff = u + u * p["r_star"] * (1.0 - jnp.exp(-r / p["r_star"]))
    return p["E"] + p["a"] * x["N"] ** -p["alpha"] + p["b"] * d_eff ** -p["beta"]


DATA_CONSTRAINED = Law(
    name="data_constrained",
    formula="L = E + A/N^alpha + B/D'^beta, D' = U + U*R*(1 - exp(-R/R*)), R = epochs - 1",
    inputs={"N": "params", "U": "unique_tokens", "repetitions": "repetitions"},
    params=(_p_E(), *_size_params(),
            Param("r_star", _lognormal(15.0, 1.0), "repetitions at which returns decay by 1/e")),
    fn=_data_constrained,
    axis="N",
    axes=_axes(N={"N": 1.0}, U={"U": 1.0}, epochs={"repetitions": 1.0}),
    reference="Muennighoff et al. 2023, eq. 5 (data side)",
    derived=lambda p, s: {"A": p["a"] * s["N"] ** p["alpha"], "B": p["b"] * s["U"] ** p["beta"]},
    unscaled=("repetitions",),
)

def mixing_law(domains: Sequence[str]) -> Law:
    """Chinchilla with a mixture-dependent irreducible term (Ye et al. 2024's mixing law).

    ``E(r) = c + k * exp(sum_j t_j r_j)`` over the training proportions r (``mix.<domain>``
    columns, on the simplex). Since sum_j r_j = 1, adding a constant to every t_j only
    rescales k, so the first domain is the reference: ``t_<first> = 0``.

    Sampled as ``E(r) = e_mid + m * (exp(t . (r - u)) - 1)`` with u the uniform mixture:
    ``e_mid`` (the term at the uniform mixture) is pinned by the data, where c and k alone
    trade off along a ridge. ``c = e_mid - m`` and ``k = m * exp(-t . u)`` are derived.
    """
    domains = sorted(domains)
    if len(domains) < 2:
        raise ValueError(f"the mixing law needs at least two mix.<domain> columns; got {domains}")
    ts = [f"t_{d}" for d in domains[1:]]
    u = 1.0 / len(domains)

    def fn(x, p):
        expo = sum(p[t] * (x[f"r.{d}"] - u) for t, d in zip(ts, domains[1:]))
        e = p["e_mid"] + p["m"] * jnp.expm1(expo)
        return e + p["a"] * x["N"] ** -p["alpha"] + p["b"] * x["D"] ** -p["beta"]

    def derived(p, s):
        shift = sum(p[t] * u for t in ts)
        return _chinchilla_derived(p, s) | {"c": p["e_mid"] - p["m"],
                                            "k": p["m"] * jnp.exp(-shift)}

    return Law(
        name="mixing",
        formula="L = c + k*exp(sum_j t_j r_j) + A/N^alpha + B/D^beta, t_<first domain> = 0",
        inputs={"N": "params", "D": "tokens"} | {f"r.{d}": f"mix.{d}" for d in domains},
        params=(Param("e_mid", _lognormal(2.0, 0.6), "irreducible loss at the uniform mixture"),
                Param("m", _lognormal(0.3, 1.0), "scale of the mixture term"),
                *(Param(t, dist.Normal(0.0, 2.0), f"effect of proportion {t[2:]} vs "
                        f"{domains[0]}") for t in ts),
                *_size_params()),
        fn=fn, axis="N", axes=_ND_AXES + _simplex_axes(domains),
        reference="Ye et al. 2024 (data mixing laws, eq. 1) in the "
                                    "Chinchilla form", derived=derived,
        unscaled=tuple(f"r.{d}" for d in domains))


def mixing_domains_law(domains: Sequence[str], evals: Sequence[str]) -> Law:
    """Ye et al.'s mixing law per evaluation domain, with an explicit known composition.

    ``L_i(r) = c_i + k_i * exp(sum_j t_ij r_j)`` for each evaluation domain i (sampled as
    ``e_mid_i + m_i * (exp(t_i . (r - u)) - 1)``, as in ``mixing_law``), plus shared size and
    data terms. A row's ``eval.<i>`` weights say what its loss measures: one-hot for a
    per-domain validation loss (``loss.<i>`` columns are expanded to such rows), the known
    composition s for an overall loss ``L = sum_i s_i L_i``. Prediction with weights s gives
    the overall loss of that composition.
    """
    domains, evals = sorted(domains), sorted(evals)
    if len(domains) < 2 or not evals:
        raise ValueError(f"mixing_domains needs >= 2 mix.<domain> and >= 1 eval.<domain> "
                         f"columns; got {domains}, {evals}")
    u = 1.0 / len(domains)

    def fn(x, p):
        out = p["a"] * x["N"] ** -p["alpha"] + p["b"] * x["D"] ** -p["beta"]
        for i in evals:
            expo = sum(p[f"t_{i}_{j}"] * (x[f"r.{j}"] - u) for j in domains[1:])
            out = out + x[f"e.{i}"] * (p[f"e_mid_{i}"] + p[f"m_{i}"] * jnp.expm1(expo))
        return out

    def derived(p, s):
        out = _chinchilla_derived(p, s)
        for i in evals:
            shift = sum(p[f"t_{i}_{j}"] * u for j in domains[1:])
            out |= {f"c_{i}": p[f"e_mid_{i}"] - p[f"m_{i}"],
                    f"k_{i}": p[f"m_{i}"] * jnp.exp(-shift)}
        return out

    per_eval = []
    for i in evals:
        per_eval += [Param(f"e_mid_{i}", _lognormal(2.0, 0.6), f"loss on {i} at the uniform "
                           "mixture, beyond the size terms"),
                     Param(f"m_{i}", _lognormal(0.3, 1.0), f"scale of {i}'s mixture term")]
        per_eval += [Param(f"t_{i}_{j}", dist.Normal(0.0, 2.0), f"effect of training on {j} "
                           f"(vs {domains[0]}) on loss on {i}") for j in domains[1:]]
    return Law(
        name="mixing_domains",
        formula="L = sum_i s_i (c_i + k_i*exp(sum_j t_ij r_j)) + A/N^alpha + B/D^beta",
        inputs={"N": "params", "D": "tokens"} | {f"r.{d}": f"mix.{d}" for d in domains}
        | {f"e.{i}": f"eval.{i}" for i in evals},
        params=(*per_eval, *_size_params()), fn=fn, axis="N", derived=derived,
        axes=_ND_AXES + _simplex_axes(domains),
        reference="Ye et al. 2024 (data mixing laws, eq. 1 per domain and eq. 3, explicit "
                  "composition)",
        unscaled=tuple(f"r.{d}" for d in domains) + tuple(f"e.{i}" for i in evals))


def mixing_implicit_law(domains: Sequence[str], latent: int = 2) -> Law:
    """Ye et al.'s mixing law for an overall loss of unknown composition: K latent domains.

    ``L = sum_k s_k L_k(r) + A/N^alpha + B/D^beta`` with ``L_k = c_k + k_k exp(t_k . r)``.
    Expanded, only ``c = sum_k s_k c_k`` and the products ``q_k = s_k k_k`` enter the loss, so
    the softmax weights s are not identified apart from the scales; we sample q_k, t_k and
    ``e_mid = c + sum_k q_k`` (the loss at the uniform mixture, which the data pin down where
    c alone would trade off against every q_k); c is derived. Even so each q_k trades off
    against the size of t_k along a curved ridge (only their sum's shape is well measured),
    so expect weaker diagnostics than the explicit law; its predictions are what to use.
    Label switching (permuting the latent domains leaves the law unchanged, so chains land
    in different modes) is removed by ordering the latent domains by their effect of the
    second training domain: ``t_1 < t_2 < ...`` on that coordinate (positive gaps).
    """
    domains = sorted(domains)
    if len(domains) < 2 or latent < 1:
        raise ValueError(f"mixing_implicit needs >= 2 mix.<domain> columns and >= 1 latent "
                         f"domain; got {domains}, {latent}")
    u = 1.0 / len(domains)
    K = range(1, latent + 1)

    def first_coordinate(p, k):
        return p["t1_" + domains[1]] + sum(p[f"gap{g}"] for g in range(2, k + 1))

    def fn(x, p):
        out = p["e_mid"] + p["a"] * x["N"] ** -p["alpha"] + p["b"] * x["D"] ** -p["beta"]
        for k in K:
            expo = first_coordinate(p, k) * (x[f"r.{domains[1]}"] - u)
            expo = expo + sum(p[f"t{k}_{j}"] * (x[f"r.{j}"] - u) for j in domains[2:])
            out = out + p[f"q{k}"] * jnp.expm1(expo)
        return out

    def derived(p, s):
        return _chinchilla_derived(p, s) | {"c": p["e_mid"] - sum(p[f"q{k}"] for k in K)}

    params = [Param("e_mid", _lognormal(2.0, 0.6), "irreducible loss at the uniform mixture")]
    for k in K:
        params.append(Param(f"q{k}", _lognormal(0.2, 1.0), f"weight x scale of latent {k}"))
        if k == 1:
            params.append(Param("t1_" + domains[1], dist.Normal(0.0, 2.0),
                                f"latent 1: effect of {domains[1]} (vs {domains[0]})"))
        else:
            params.append(Param(f"gap{k}", _lognormal(1.0, 1.0),
                                f"latent {k}'s effect of {domains[1]} minus latent {k - 1}'s"))
        params += [Param(f"t{k}_{j}", dist.Normal(0.0, 2.0),
                         f"latent {k}: effect of {j} (vs {domains[0]})") for j in domains[2:]]
    return Law(
        name=f"mixing_implicit{latent}" if latent != 2 else "mixing_implicit",
        formula="L = c + sum_k q_k*exp(sum_j t_kj (r_j - 1/J)) + A/N^alpha + B/D^beta, latent "
                "domains ordered by t_k,<second domain>",
        inputs={"N": "params", "D": "tokens"} | {f"r.{d}": f"mix.{d}" for d in domains},
        params=(*params, *_size_params()), fn=fn, axis="N", derived=derived,
        axes=_ND_AXES + _simplex_axes(domains),
        reference="Ye et al. 2024 (data mixing laws, eq. 4, implicit composition)",
        unscaled=tuple(f"r.{d}" for d in domains))


MAX_EPOCHS = 64  # repetitions beyond this are treated as the 64th (their utility is ~0)


def filtering_law(pools: Sequence[str]) -> Law:
    """Data-filtering law with repetition decay and pool combination (Goyal et al. 2024).

    Loss after n samples of a pool of U unique samples (R = n / U passes):
    ``L = d + A * (n_1/n0)^-b_1 * prod_{k>=2} (n_k / n_{k-1})^-b_k`` with ``n_k = min(n, kU)``
    (samples seen by the end of pass k) and the utility of the k-th pass halving every tau
    passes, ``b_k = b * 2^(-(k-1)/tau)``. A mixture of pools with weights w has
    ``b = sum_j w_j b_j`` (``pool.<name>`` columns; a run on one pool has a one-hot row).
    """
    pools = sorted(pools)
    bs = [f"b_{p}" for p in pools]

    def fn(x, p):
        b = sum(p[bn] * x[f"w.{pl}"] for bn, pl in zip(bs, pools))
        R = jnp.maximum(x["repetitions"], 1e-9)
        k = jnp.arange(2, MAX_EPOCHS + 1, dtype=jnp.float32)
        decay = 2.0 ** (-(k - 1) / jnp.asarray(p["tau"])[..., None])  # [..., 1?, K-1]
        # log(n_k / n_{k-1}) for passes k >= 2: log(clip(R, k-1, k) / (k-1))
        later = jnp.log(jnp.clip(R[..., None], k - 1, k) / (k - 1))
        first = jnp.log(x["n"] / jnp.maximum(R, 1.0))  # log(n_1 / n0)
        log_term = -b * (first + jnp.sum(decay * later, -1))
        return p["d"] + p["A"] * jnp.exp(log_term)

    return Law(
        name="filtering",
        formula="L = d + A*(n_1/n0)^-b_1 * prod_k (n_k/n_{k-1})^-b_k, b_k = b*2^(-(k-1)/tau), "
                "b = sum_j w_j b_j over pools",
        inputs={"n": "tokens", "repetitions": "repetitions"}
        | {f"w.{pl}": f"pool.{pl}" for pl in pools},
        params=(Param("d", _lognormal(2.0, 0.6), "irreducible loss"),
                Param("A", _lognormal(0.5, 1.0), "reducible loss at the reference n0"),
                Param("tau", _lognormal(3.0, 1.0), "passes over which a pool's utility halves"),
                *(Param(bn, _lognormal(0.3, 0.7), f"utility (data exponent) of pool {pl}")
                  for bn, pl in zip(bs, pools))),
        fn=fn, axis="n", axes=_axes(D={"n": 1.0}, repetitions={"repetitions": 1.0}),
        reference="Goyal et al. 2024 (scaling laws for data filtering)",
        unscaled=("repetitions", *(f"w.{pl}" for pl in pools)))


LAWS: dict[str, Law] = {law.name: law for law in
                        (CHINCHILLA, QUALITY, QUALITY_EXP, OVERTRAIN, DATA_CONSTRAINED,
                         mixing_law(["<domain1>", "<domain2>"]),
                         mixing_domains_law(["<domain1>", "<domain2>"], ["<eval1>"]),
                         mixing_implicit_law(["<domain1>", "<domain2>"]),
                         filtering_law(["<pool1>", "<pool2>"]))}


_RENAMED = {"datacon": "data_constrained"}  # old name -> new name, accepted with a warning


def get_law(name: str, *, domains: Sequence[str] | None = None,
            pools: Sequence[str] | None = None, evals: Sequence[str] | None = None) -> Law:
    """A law by name; the mixing and filtering laws are built for the table's domains/pools
    (``mixing_implicitK`` has K latent domains; plain ``mixing_implicit`` two)."""
    if name == "mixing" and domains is not None:
        return mixing_law(domains)
    if name == "mixing_domains" and domains is not None and evals is not None:
        return mixing_domains_law(domains, evals)
    m = re.fullmatch(r"mixing_implicit(\d*)", name)
    if m and domains is not None:
        return mixing_implicit_law(domains, int(m.group(1) or 2))
    if name == "filtering" and pools is not None:
        return filtering_law(pools)
    if name in _RENAMED:
        warnings.warn(f"law {name!r} is now called {_RENAMED[name]!r}; the old name will go",
                      FutureWarning, stacklevel=2)  # shown by default
        name = _RENAMED[name]
    try:
        return LAWS[name]
    except KeyError:
        raise ValueError(f"unknown law {name!r}; available: {', '.join(sorted(LAWS))}") from None


_PRIOR_RE = re.compile(r"^\s*([A-Za-z]+)\s*\((.*)\)\s*$")


def parse_prior(text: str) -> dist.Distribution:
    """Parse ``"LogNormal(0.5, 1)"`` into a numpyro distribution (any numpyro name).

    >>> parse_prior("Normal(0, 2)").scale
    2.0
    """
    m = _PRIOR_RE.match(text)
    if not m or not hasattr(dist, m.group(1)):
        raise ValueError(f"cannot read prior {text!r}; write e.g. 'LogNormal(-1.0, 0.5)' with a "
                         "distribution name from numpyro.distributions")
    try:
        args = [float(a) for a in m.group(2).split(",") if a.strip()]
    except ValueError:
        raise ValueError(f"prior {text!r}: arguments must be numbers") from None
    return getattr(dist, m.group(1))(*args)
