"""The NumPyro model of a law: its noise priors (Student-t with nu > 2), the loss -> accuracy
link of the joint model, and ``law_model`` itself.

The model is a plain function of its data (``obs=None`` by default), so the same function
gives the prior predictive, the posterior (``MCMC``) and the posterior predictive. Loss is
modelled on the log scale with a Student-t likelihood (robust to the outlying runs published
tables contain) whose degrees of freedom stay above 2, so every predictive mean and variance
exists, or a Gaussian.

Why not a contaminated normal (a normal core plus a small, wide outlier share, the other
finite choice): on Chinchilla it shaped the k = 0 intervals better (D/N >= 60: 0.40 / 0.94 at
50% / 90%, against 0.38 / 0.96), but with the backtested k that holdout still covered 1.00
at 90%, datablations N >= 2e9 fell to 0.29 at 50%, and that fit failed R-hat (1.016).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints
from numpyro.distributions.transforms import AffineTransform

from datalaws.fit.laws import NOISE_PRIORS, Law

__all__ = ["NU_MIN", "noise_prior", "row_noise", "AccuracyLink", "law_model"]

NU_MIN = 2.0  # Student-t degrees of freedom stay above 2: finite predictive variance


class _Above(dist.TransformedDistribution):
    """``low + base`` with support ``(low, inf)``, so NUTS samples it on an unconstrained scale."""

    def __init__(self, base: dist.Distribution, low: float):
        self.low = low
        super().__init__(base, AffineTransform(low, 1.0))

    @constraints.dependent_property(is_discrete=False, event_dim=0)
    def support(self):
        return constraints.greater_than(self.low)


def noise_prior(name: str, priors: Mapping[str, dist.Distribution] | None = None
                ) -> dist.Distribution:
    """The prior of noise parameter ``name`` (``NOISE_PRIORS``, or an override). A prior
    given for ``nu`` is that of ``nu - 2``."""
    d = (priors or {}).get(name, NOISE_PRIORS[name])
    return _Above(d, NU_MIN) if name == "nu" else d


def _noise_site(name: str, law: Law, priors) -> jnp.ndarray:
    """sigma or nu: a scalar, or one per noise group (``Law.noise_groups``) as one vector
    site, so a fold axis stays in front as for the law's vector parameters."""
    d = noise_prior(name, priors)
    G = len(law.noise_groups)
    return numpyro.sample(name, d.expand([G]).to_event(1) if G else d)


def row_noise(law: Law, x: Mapping[str, jnp.ndarray], value: jnp.ndarray) -> jnp.ndarray:
    """Each row's sigma (or nu) from per-group values ``value`` [*batch, G]: the groups'
    values weighted by the rows' ``Law.noise_groups`` inputs (one-hot rows: their group's
    own). ``value[..., g]`` must broadcast against the inputs' row axis."""
    return sum(jnp.asarray(x[r]) * value[..., g] for g, r in enumerate(law.noise_groups))


@dataclasses.dataclass(frozen=True, kw_only=True)
class AccuracyLink:
    """Loss -> accuracy for each task, with the task's chance floor fixed.

    sigmoid:      acc = floor + (1 - floor) * (1 - delta) * sigmoid(-k (L - L0))
                  (ceiling 1 - delta (1 - floor), between the floor and 1: with the ceiling
                  as 1 - delta, a task scored below chance by small models, such as ARC-
                  challenge, fitted a ceiling under its floor, a curve that never rises)
    exponential:  err = (1 - floor) - k * exp(-gamma L)   (Gadre et al. 2024, eq. 5)
    """

    tasks: tuple[str, ...]
    floors: tuple[float, ...]  # chance accuracy per task (1 / number of choices)
    form: str = "sigmoid"
    ref_loss: float = 3.0  # centre of the prior on L0: the median observed loss

    def __post_init__(self):
        if self.form not in ("sigmoid", "exponential"):
            raise ValueError(f"AccuracyLink.form={self.form!r}; use sigmoid|exponential")
        if len(self.tasks) != len(self.floors):
            raise ValueError("AccuracyLink: one floor per task")
        for t, f in zip(self.tasks, self.floors):
            if not 0.0 <= f < 1.0:
                raise ValueError(f"AccuracyLink: floor of task {t!r} is {f}; need 0 <= floor < 1")

    def sample_params(self) -> dict[str, jnp.ndarray]:
        with numpyro.plate("tasks", len(self.tasks)):
            if self.form == "sigmoid":
                return {
                    "acc_L0": numpyro.sample("acc_L0", dist.Normal(self.ref_loss, 1.0)),
                    "acc_k": numpyro.sample("acc_k", dist.LogNormal(jnp.log(3.0), 1.0)),
                    "acc_delta": numpyro.sample("acc_delta", dist.Beta(1.0, 4.0)),
                    "acc_sigma": numpyro.sample("acc_sigma", dist.HalfNormal(0.05)),
                }
            return {
                "acc_k": numpyro.sample("acc_k", dist.LogNormal(0.0, 2.0)),
                "acc_gamma": numpyro.sample("acc_gamma", dist.LogNormal(0.0, 1.0)),
                "acc_sigma": numpyro.sample("acc_sigma", dist.HalfNormal(0.05)),
            }

    def accuracy(self, loss: jnp.ndarray, p: Mapping[str, jnp.ndarray]) -> jnp.ndarray:
        """loss [..., n] -> accuracy [..., n, tasks]."""
        floor = jnp.asarray(self.floors)
        L = loss[..., None]
        if self.form == "sigmoid":
            s = jax.nn.sigmoid(-p["acc_k"] * (L - p["acc_L0"]))
            return floor + (1 - floor) * (1 - p["acc_delta"]) * s
        err = (1 - floor) - p["acc_k"] * jnp.exp(-p["acc_gamma"] * L)
        return 1.0 - jnp.clip(err, 0.0, 1.0)


def law_model(x: Mapping[str, jnp.ndarray], *, law: Law, y: jnp.ndarray | None = None,
              likelihood: str = "studentt", link: AccuracyLink | None = None,
              acc: jnp.ndarray | None = None, distance: jnp.ndarray | None = None,
              k: float = 0.0, mask: jnp.ndarray | None = None,
              noise: Mapping[str, dist.Distribution] | None = None) -> None:
    """NumPyro model of one law.

    Args:
      x: normalised inputs by role, each [n].
      y: observed loss [n] or None (predictive).
      acc: observed accuracy [n, tasks] (NaN where missing) or None.
      distance: [n] extrapolation distance d of each point (0 inside the fitted data). With
        ``k > 0`` each point's true loss is drawn around the law as
        ``log L_true = log L_law + k*d*z``, z ~ N(0, 1): the discrepancy term.
      mask: [n] bool, rows that enter the likelihood; or [folds, n] to fit independent
        copies of the law at once, one per row of the mask (rolling-origin backtests: one
        compiled sampler for all folds, since the joint posterior factorises over folds).
      noise: overrides of ``NOISE_PRIORS`` (``nu``'s is that of ``nu - 2``).
    """
    folds = None if mask is None or jnp.ndim(mask) == 1 else mask.shape[0]
    fold_plate = numpyro.plate("folds", folds, dim=-2) if folds else contextlib.nullcontext()
    with fold_plate:
        p = {prm.name: numpyro.sample(prm.name, prm.prior) for prm in law.params}
        sigma = _noise_site("sigma", law, noise)
        nu = _noise_site("nu", law, noise) if likelihood == "studentt" else None
    link_p = link.sample_params() if link is not None else None
    log_mu = jnp.log(law.fn(x, p))
    n = log_mu.shape[-1]
    with fold_plate, numpyro.plate("runs", n), \
            numpyro.handlers.mask(mask=True if mask is None else mask):
        if distance is not None and k > 0:
            z = numpyro.sample("discrepancy_z", dist.Normal(0.0, 1.0))
            numpyro.deterministic("log_loss_law", log_mu)
            log_mu = log_mu + k * distance * z
        if law.noise_groups:  # each row its group's noise ([folds, 1, G]: per fold)
            sigma = row_noise(law, x, sigma)
            nu = None if nu is None else row_noise(law, x, nu)
        noise = (dist.StudentT(nu, log_mu, sigma) if nu is not None
                 else dist.Normal(log_mu, sigma))
        numpyro.sample("log_loss", noise, obs=None if y is None else jnp.log(y))
    if link is not None:
        mean_acc = link.accuracy(jnp.exp(log_mu), link_p)  # [n, tasks]
        acc_mask = None if acc is None else ~jnp.isnan(acc)
        if acc_mask is not None and mask is not None:
            acc_mask = acc_mask & mask[:, None]
        obs = None if acc is None else jnp.where(acc_mask, acc, 0.5)
        with numpyro.plate("tasks_", len(link.tasks), dim=-1), \
             numpyro.plate("runs_", n, dim=-2), \
             numpyro.handlers.mask(mask=True if acc_mask is None else acc_mask):
            numpyro.sample("acc", dist.Normal(mean_acc, link_p["acc_sigma"]), obs=obs)
