"""One generative story: the vectorised posterior predictive (``posterior_predictive``, what
``predict`` returns) draws from the same distribution as ``numpyro.infer.Predictive`` run on
the law's own NumPyro model (``law_model``) with the same posterior draws: the law exactly,
the observed loss (discrepancy beyond the data, Student-t noise) and the accuracies (the link)
within Monte Carlo error."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer import Predictive

from datalaws.fit.laws import get_law
from datalaws.fit.model import AccuracyLink, law_model
from datalaws.fit.sampling import posterior_predictive

S = 20_000  # draws: quantiles of each predictive to ~0.01 sd


def _draws(tasks: int) -> dict[str, np.ndarray]:
    """A posterior as a fitted law has one: tight around a law, small noise, some draws with
    heavy-tailed Student-t noise (nu near 2)."""
    rng = np.random.default_rng(0)

    def around(v, s, *shape):
        return v * np.exp(s * rng.standard_normal((S, *shape)))

    return {"E": around(1.8, 0.02), "a": around(0.4, 0.05), "alpha": around(0.34, 0.03),
            "b": around(0.4, 0.05), "beta": around(0.28, 0.03),
            "sigma": around(0.02, 0.2), "nu": 2.0 + rng.gamma(2.0, 10.0, S),
            "acc_L0": 3.0 + 0.05 * rng.standard_normal((S, tasks)),
            "acc_k": around(3.0, 0.1, tasks), "acc_delta": around(0.1, 0.2, tasks),
            "acc_sigma": around(0.01, 0.2, tasks)}


def test_posterior_predictive_matches_numpyro_predictive_on_the_law_model():
    law = get_law("chinchilla")
    link = AccuracyLink(tasks=("a", "b"), floors=(0.25, 0.5), ref_loss=3.0)
    samples = _draws(len(link.tasks))
    x = {"N": np.array([0.5, 2.0, 40.0]), "D": np.array([1.0, 3.0, 60.0])}
    distance = np.array([0.0, 0.5, 2.0])  # inside the data, then beyond it
    k = 0.1
    ours = posterior_predictive(law, samples, x, likelihood="studentt", link=link,
                                distance=distance, k=k, seed=3)
    model = functools.partial(law_model, law=law, likelihood="studentt", link=link,
                              distance=jnp.asarray(distance), k=k)
    ref = Predictive(model, posterior_samples={n: jnp.asarray(v) for n, v in samples.items()},
                     return_sites=["log_loss", "log_loss_law", "acc"])(
        jax.random.PRNGKey(7), {r: jnp.asarray(v) for r, v in x.items()})
    # the law itself is deterministic given a draw: equal up to float32 rounding
    np.testing.assert_allclose(ours["loss_law"], np.exp(np.asarray(ref["log_loss_law"])),
                               rtol=1e-5)
    mine = np.log(ours["loss"])
    theirs = np.asarray(ref["log_loss"])
    sd = theirs.std(axis=0)
    # the discrepancy widens the far point: its spread grows with distance in both
    assert sd[2] > 2 * sd[0] and mine.std(axis=0)[2] > 2 * mine.std(axis=0)[0]
    _same_quantiles(mine, theirs)
    acc = np.asarray(ref["acc"])  # [S, n, tasks]
    for i, t in enumerate(link.tasks):
        _same_quantiles(ours[f"acc.{t}"], acc[..., i])


def _same_quantiles(a: np.ndarray, b: np.ndarray) -> None:
    """5/25/50/75/95% quantiles per point agree within 4 standard errors of the difference of
    two independent sample quantiles: sqrt(2 q (1 - q) / S) / density at the quantile, the
    density read off the reference's quantiles 2% either side (the accuracies are skewed)."""
    qs = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    spread = np.quantile(b, qs + 0.02, axis=0) - np.quantile(b, qs - 0.02, axis=0)  # 0.04 / f
    tol = 4 * np.sqrt(2 * qs * (1 - qs) / S)[:, None] * spread / 0.04
    diff = np.abs(np.quantile(a, qs, axis=0) - np.quantile(b, qs, axis=0))
    assert (diff <= tol).all(), (diff / tol).round(2)
