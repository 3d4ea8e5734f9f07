"""Trust, measured: simulation from a law's prior and simulation-based calibration (SBC).

SBC (Talts et al. 2018): draw parameters from the prior, simulate a data set, fit it, and
record the rank of the true value among the posterior draws. If inference is calibrated the
ranks are uniform. To keep this cheap, all replicate data sets can be fitted in *one* NUTS
run: the law gets a leading replicate axis and the joint posterior factorises over
replicates. That shares one step size and mass matrix across replicates, which is fine for
well-conditioned laws (chinchilla, quality) but not for laws whose prior draws include
ill-conditioned data sets (mixing: one ridge-y replicate stalls the whole joint chain), so
``separate=True`` fits each replicate on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro.infer import MCMC, NUTS, init_to_median
from scipy import stats

from datalaws.fit.infer import law_model
from datalaws.fit.laws import Law

__all__ = ["simulate", "sbc_ranks", "uniformity_pvalue"]


def simulate(law: Law, x: Mapping[str, np.ndarray], params: Mapping[str, float], *,
             sigma: float = 0.01, seed: int = 0) -> np.ndarray:
    """Observed losses [n] from ``law`` at normalised inputs ``x`` with log-normal noise."""
    mu = np.asarray(law.fn({r: jnp.asarray(v) for r, v in x.items()}, dict(params)))
    return mu * np.exp(sigma * np.random.default_rng(seed).standard_normal(mu.shape))


def sbc_ranks(law: Law, x: Mapping[str, np.ndarray], *, replicates: int = 40,
              draws: int = 199, warmup: int = 300, sigma: float = 0.02, seed: int = 0,
              separate: bool = False) -> dict[str, np.ndarray]:
    """Ranks [replicates] of each true parameter among ``draws`` posterior draws.

    Parameters are drawn from the law's prior (noise fixed at ``sigma`` and a Gaussian
    likelihood, the model's own generative story with nu -> inf).
    """
    key = jax.random.PRNGKey(seed)
    truth = {p.name: np.asarray(p.prior.sample(k, (replicates, 1)))
             for p, k in zip(law.params, jax.random.split(key, len(law.params)))}
    truth["sigma"] = np.full((replicates, 1), sigma)
    xs = {r: jnp.asarray(v) for r, v in x.items()}
    mu = np.asarray(law.fn(xs, truth))  # [R, n]
    rng = np.random.default_rng(seed)
    y = mu * np.exp(sigma * rng.standard_normal(mu.shape))
    ok = np.all(np.isfinite(y) & (y > 0), axis=1)
    mask = np.ones(mu.shape, bool)
    model = functools.partial(law_model, law=law, likelihood="normal")
    mcmc = MCMC(NUTS(model, init_strategy=init_to_median, target_accept_prob=0.9,
                     dense_mass=separate),
                num_warmup=warmup, num_samples=draws, num_chains=1, progress_bar=False)
    y_safe = np.where(ok[:, None], y, 1.0)
    # one run over all replicates, or one run per replicate
    batches = [slice(i, i + 1) for i in range(replicates)] if separate else [slice(None)]
    post = {}
    for i, rows in enumerate(batches):
        with numpyro.validation_enabled(False):
            mcmc.run(jax.random.PRNGKey(seed + 1 + i), xs, y=jnp.asarray(y_safe[rows]),
                     mask=jnp.asarray(mask[rows]))
        for k, v in mcmc.get_samples().items():
            post.setdefault(k, []).append(np.asarray(v)[..., 0])
    post = {k: np.concatenate(v, axis=-1) for k, v in post.items()}  # [S, R]
    return {name: np.sum(post[name] < truth[name][:, 0][None, :], axis=0)[ok]
            for name in [p.name for p in law.params] + ["sigma"]}


def uniformity_pvalue(ranks: np.ndarray, draws: int, bins: int = 5) -> float:
    """Chi-square test p-value that ``ranks`` (0..draws) are uniform, in ``bins`` bins."""
    counts, _ = np.histogram(ranks, bins=bins, range=(0, draws + 1))
    return float(stats.chisquare(counts).pvalue)



