"""Priors of the mixing laws' effects (``datalaws.fit.mixing`` re-exports them).

A latent term ``(exp(kappa g) - 1) / kappa`` is sampled in one of two coordinates:

- the *mildest* term of each loss series by its linear effects ``beta`` (``g = beta . (r-u)``):
  at small curvature the data pin the slope, and ``kappa -> 0`` is the linear law;
- every *further* (more curved, ``kappa_k > kappa_1``) term by its exponent coefficients
  ``t = kappa beta``, the paper's t (``g = t . (r-u) / kappa``). A strongly curved term is
  ``exp(t . (r-u)) / kappa``: the data pin its shape t and its amplitude 1/kappa separately,
  while in ``beta`` coordinates all J effects slide along ``beta ~ t / kappa`` with kappa,
  a banana no mass matrix follows (RegMix Pile-CC, K = 2: corr(kappa_2, |beta_2|) = -0.87,
  R-hat 1.015, bulk ESS 224 of 2000 draws; the N(0, 1) prior on beta also pushed kappa_2
  to its bound, since large t needed large kappa).

The two kinds get their own prior scales (``BETA_SCALE``, ``T_SCALE``); pooled across
evaluation domains, each kind has its own scale per training domain.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.distributions import constraints

__all__ = ["PooledEffects", "effects_prior", "BETA_SCALE", "T_SCALE", "POOL_SCALES"]

BETA_SCALE = 1.0  # prior sd of a linear effect (nats per unit of proportion), unpooled
T_SCALE = 10.0  # prior sd of a curved term's exponent coefficient t, unpooled
# median of the pooled per-training-domain scale tau_j, per kind (beta, t)
POOL_SCALES = (0.5, 5.0)


class PooledEffects(dist.Distribution):
    """Centred hierarchical prior on an [R, J] matrix of effects, as one vector
    ``[effects (R*J, row-major), log tau (G*J)]``: row r is of kind ``kinds[r]`` (G kinds),
    ``log tau_gj ~ N(log scales[g], 0.75)``, ``effect_rj ~ N(0, tau_{kinds[r], j})``.
    Support: all reals. The scale's prior keeps tau off 0: a half-normal lets a domain with
    weak effects fall into the funnel's neck (tau -> 0 with every effect -> 0), where NUTS
    diverges."""

    arg_constraints = {}
    support = constraints.real_vector

    def __init__(self, E: int, J: int, scale: float = POOL_SCALES[0], *,
                 kinds: Sequence[int] | None = None, scales: Sequence[float] | None = None,
                 validate_args=None):
        self.E, self.J, self.scale = E, J, scale
        self.kinds = tuple(int(k) for k in (kinds if kinds is not None else [0] * E))
        self.G = max(self.kinds) + 1
        self.scales = tuple(scales) if scales is not None else (scale,) + POOL_SCALES[1:]
        super().__init__(batch_shape=(), event_shape=(E * J + self.G * J,),
                         validate_args=validate_args)

    def _log_scale(self):
        return jnp.log(jnp.asarray(self.scales[: self.G]))[:, None]  # [G, 1]

    def sample(self, key, sample_shape=()):
        k1, k2 = jax.random.split(key)
        lt = self._log_scale() + 0.75 * jax.random.normal(k1, sample_shape + (self.G, self.J))
        tau = jnp.exp(lt)[..., np.asarray(self.kinds), :]  # [..., E, J]
        beta = tau * jax.random.normal(k2, sample_shape + (self.E, self.J))
        return jnp.concatenate([beta.reshape(sample_shape + (-1,)),
                                lt.reshape(sample_shape + (-1,))], axis=-1)

    def log_prob(self, value):
        n = self.E * self.J
        beta = value[..., :n].reshape(value.shape[:-1] + (self.E, self.J))
        lt = value[..., n:].reshape(value.shape[:-1] + (self.G, self.J))
        lp = jnp.sum(dist.Normal(self._log_scale(), 0.75).log_prob(lt), (-2, -1))
        tau = jnp.exp(lt)[..., np.asarray(self.kinds), :]
        return lp + jnp.sum(dist.Normal(0.0, tau).log_prob(beta), (-2, -1))


def effects_prior(rows: int, J: int, kinds: Sequence[int], pooled: bool,
                  scales=None) -> dist.Distribution:
    """The prior of the effects vector ``z``: ``rows`` x J effects (row r of kind
    ``kinds[r]``: 0 linear effects, 1 exponent coefficients), pooled across rows per
    training domain, or independent normals of each kind's scale, or of the given
    ``scales`` [kinds, J] (fixed per kind and training domain)."""
    if pooled:
        return PooledEffects(rows, J, kinds=kinds)
    if scales is not None:
        sd = np.asarray(scales, np.float32)[np.asarray(kinds)].reshape(-1)
        return dist.Normal(jnp.zeros(rows * J), jnp.asarray(sd)).to_event(1)
    if not any(kinds):
        return dist.Normal(0.0, BETA_SCALE).expand([rows * J]).to_event(1)
    sd = np.repeat(np.asarray([(BETA_SCALE, T_SCALE)[k] for k in kinds], np.float32), J)
    return dist.Normal(jnp.zeros(rows * J), jnp.asarray(sd)).to_event(1)
