"""The law library: each law is a pure ``jax.numpy`` function plus the spec of its parameters.

A law maps *normalised* inputs and parameters to a predicted loss. Inputs are divided by a
reference value of the data (the geometric mean, stored with the fit) before they reach the
law, so ``A / N**alpha`` is written ``a * (N/N0)**-alpha``: ``a`` is the loss term at a typical
model size and is nearly uncorrelated with ``alpha``, which keeps NUTS trees shallow. The
published constants (``A = a * N0**alpha``) are reported as derived quantities.

Every law also names the axes along which it extrapolates (``axes``: N and D for Chinchilla,
compute and tokens per parameter for over-training, ...) and its main input (``axis``, what
residual plots run along). Beyond the data the predictive carries a discrepancy term (see
``datalaws.fit.discrepancy``):

    log L_true = log L_law + sqrt(sum_j (k_j * d_j)**2) * z,   z ~ N(0, 1)

with ``d_j`` a point's distance beyond the fitted runs' hull along direction j and ``k_j``
learned by rolling-origin backtests on the training rows.
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
    "parse_priors",
    "NOISE_PRIORS",
    "DISCREPANCY_FORM",
    "Axis",
]

Array = jnp.ndarray

DISCREPANCY_FORM = ("log L_true = log L_law + sqrt(sum_j (k_j*d_j)^2)*z, z ~ N(0, 1): a point's "
                    "offset r from the convex hull of the fitted runs in the law's axes (log "
                    "scale; mixture proportions linear, one k for them) counts d_j = "
                    "r*sqrt(w_j) along each direction j it extrapolates (its log axes, compute "
                    "C, tokens per parameter M), w_j ~ cos^2 angle_j, sum 1; k_j from "
                    "rolling-origin backtests (largest N, D, C, M held back in turn): each "
                    "fold's k_j ~ HalfNormal(s_j), s_j = 0 with prior probability 1/2, else "
                    "HalfNormal(tau), tau ~ HalfNormal(0.05), and a prediction draws a new "
                    "fold's k; beyond the folds' reach, and where no backtest is possible, "
                    "k_j ~ HalfNormal(0.05)")


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
    axis: str  # the main input role (residual plots; the discrepancy's distance uses axes)
    reference: str  # paper the formula is taken from
    # natural-scale constants from the fitted ones and the input scales (e.g. A = a*N0^alpha)
    derived: Callable[[Mapping[str, Array], Mapping[str, float]], dict[str, Array]] = (
        lambda p, s: {})
    unscaled: tuple[str, ...] = ()  # input roles that are not divided by a reference value
    # every direction the law extrapolates along: the discrepancy grows with the distance of a
    # point from the hull of the fitted runs in these coordinates (datalaws.fit.discrepancy)
    axes: tuple[Axis, ...] = ()
    # latent terms whose posterior has distinct local optima: chains stuck in one of
    # negligible mass are dropped after sampling (datalaws.fit.chains; the mixing laws)
    minor_modes: bool = False
    # input roles whose values weight each row's noise (the per-domain mixing law's
    # ``e.<domain>``): sigma and nu are then vectors, one per role, and a row's are their
    # weighted sum (``datalaws.fit.model.row_noise``); empty: one sigma and nu for every row
    noise_groups: tuple[str, ...] = ()

    # The law's groups are spelled in its input roles: ``r.<domain>`` (training proportion),
    # ``e.<domain>`` (evaluation weight), ``w.<pool>`` (pool weight). Only this module reads
    # that spelling; everyone else asks the law.
    def _group(self, prefix: str) -> tuple[str, ...]:
        return tuple(r[len(prefix):] for r in self.inputs if r.startswith(prefix))

    @property
    def domains(self) -> tuple[str, ...]:
        """Training-mixture domains (the mixing laws); empty for other laws."""
        return self._group("r.")

    @property
    def evals(self) -> tuple[str, ...]:
        """Evaluation domains a per-domain law predicts a loss for."""
        return self._group("e.")

    @property
    def pools(self) -> tuple[str, ...]:
        """Data pools (the filtering law)."""
        return self._group("w.")

    @property
    def sizes(self) -> tuple[str, ...]:
        """The size inputs (N, D) the law has terms for."""
        return tuple(r for r in ("N", "D") if r in self.inputs)

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """Everything the law is built over: ``get_law(law.name, **law.groups)`` rebuilds it."""
        return {"domains": self.domains, "evals": self.evals, "pools": self.pools,
                "sizes": self.sizes}

    @property
    def family(self) -> str:
        """``mixing`` for every mixing law, else the law's name."""
        return "mixing" if self.name.startswith("mixing") else self.name

    def role(self, group: str, name: str) -> str:
        """The input role of one member of a group, e.g. ``role("domains", "web")``."""
        prefix = {"domains": "r.", "evals": "e.", "pools": "w."}[group]
        return prefix + name

    def prepare(self, table, *, where: str = "the points", validate: bool = False,
                runs: bool = False):
        """``table`` in the form this law reads, checked: pool weights from a ``pool``
        column, per-domain rows, mixtures on the simplex over the law's domains, and with
        ``validate`` the data contract (``datalaws.fit.lawtable.prepare``). Errors are one
        line naming the culprit."""
        from datalaws.fit.lawtable import prepare

        return prepare(self, table, where=where, validate=validate, runs=runs)

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

def mixing_law(domains: Sequence[str], sizes: Sequence[str] = ("N", "D")) -> Law:
    """Ye et al. 2024's mixing law for one loss (size terms only for ``sizes`` the table
    varies). Defined in ``datalaws.fit.mixing`` (imported lazily: it builds on ``Law``)."""
    from datalaws.fit import mixing

    return mixing.mixing_law(domains, sizes)


def mixing_domains_law(domains: Sequence[str], evals: Sequence[str],
                       sizes: Sequence[str] = ("N", "D"), latent: int = 1) -> Law:
    """Ye et al.'s law per evaluation domain, hierarchical across domains; ``latent`` > 1
    latent terms per domain (``datalaws.fit.mixing``)."""
    from datalaws.fit import mixing

    return mixing.mixing_domains_law(domains, evals, sizes, latent)


def mixing_implicit_law(domains: Sequence[str], latent: int = 2,
                        sizes: Sequence[str] = ("N", "D")) -> Law:
    """Ye et al.'s implicit form: K latent domains (``datalaws.fit.mixing``)."""
    from datalaws.fit import mixing

    return mixing.mixing_implicit_law(domains, latent, sizes)


def filtering_law(pools: Sequence[str], *, rule: str = "paper") -> Law:
    """Goyal et al. 2024's data-filtering law over ``pools``: per-pool utility b_j and half-life
    tau_j (hierarchical across pools), d inside the repetition product, passes uncapped, a union
    of pools by the paper's rule. Defined in ``datalaws.fit.filtering`` (imported here lazily:
    that module builds on ``Law`` and ``Param`` above)."""
    from datalaws.fit import filtering

    return filtering.filtering_law(pools, rule=rule)


LAWS: dict[str, Law] = {law.name: law for law in
                        (CHINCHILLA, QUALITY, QUALITY_EXP, OVERTRAIN, DATA_CONSTRAINED,
                         mixing_law(["<domain1>", "<domain2>"]),
                         mixing_domains_law(["<domain1>", "<domain2>"], ["<eval1>"]),
                         dataclasses.replace(mixing_implicit_law(["<domain1>", "<domain2>"]),
                                             name="mixing_implicit"),
                         filtering_law(["<pool1>", "<pool2>"]))}


_RENAMED = {"datacon": "data_constrained"}  # old name -> new name, accepted with a warning


def get_law(name: str, *, domains: Sequence[str] | None = None,
            pools: Sequence[str] | None = None, evals: Sequence[str] | None = None,
            sizes: Sequence[str] | None = None) -> Law:
    """A law by name; the mixing and filtering laws are built for the table's domains/pools
    (``mixing_implicitK`` has K latent domains; plain ``mixing_implicit`` two; ``sizes``:
    the size inputs, N and/or D, a mixing law has terms for, default both)."""
    sz = ("N", "D") if sizes is None else tuple(sizes)
    if name == "mixing" and domains is not None:
        return mixing_law(domains, sz)
    md = re.fullmatch(r"mixing_domains(\d*)", name)
    if md and domains is not None and evals is not None:
        return mixing_domains_law(domains, evals, sz, int(md.group(1) or 1))
    m = re.fullmatch(r"mixing_implicit(\d*)", name)
    if m and domains is not None:
        return mixing_implicit_law(domains, int(m.group(1) or 2), sz)
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


def parse_priors(priors: Mapping[str, str] | None) -> dict[str, dist.Distribution]:
    """``{name: "LogNormal(0.5, 1)"}`` parsed; a bad one raises one line naming it (numpyro's
    own message says what is wrong, not which prior)."""
    out = {}
    for name, text in (priors or {}).items():
        try:
            out[name] = parse_prior(text)
        except (TypeError, ValueError) as e:  # arity, syntax, or a parameter numpyro refuses
            raise ValueError(f"prior {name}" + ("" if text in str(e) else f"={text!r}")
                             + f": {e}") from None
    return out


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
