"""Backtest folds sampled side by side, each fold's chains with their own NUTS adaptation.

A fold is the law fitted to the rows below a cut (``fit/backtest.py``). The folds are
independent posteriors of one shape, so they run as one program: the folds of a chain are
lanes of ``jax.vmap`` over NumPyro's functional NUTS (``hmc``), each with its fold's row mask
as its model argument, and each adapts its own step size and dense mass during warmup; the
chains run on separate host devices where ``run_nuts`` would put them there.

Why not one NUTS on the folds' joint posterior (the law with a leading fold axis): one step
size and one mass then serve every fold, and the stiffest fold sets them. On the demo's
mixing sweep (three sizes, two token counts) one fold cut to two sizes, whose power law in N
is a ridge; the joint sampler took NUTS's maximum 1023 leapfrog steps a draw and every fold
failed R-hat (1.8-2.0, bulk ESS 3), the well-posed ones too; fold by fold all four pass.
Each fold's trajectories are as long as its own posterior needs (a vectorised ``while`` loop
runs as long as its longest lane): on Chinchilla 70-95 leapfrog steps a draw, where the
joint posterior of its 8 folds took 400.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.infer.hmc import hmc
from numpyro.infer.util import initialize_model
from numpyro.util import fori_collect

from datalaws.fit.laws import Law
from datalaws.fit.model import law_model

if TYPE_CHECKING:
    from datalaws.fit.sampling import FitConfig

__all__ = ["FoldDraws", "run_folds"]


@dataclasses.dataclass(frozen=True)
class FoldDraws:
    """The folds' draws as the joint fold sampler returned them (the ``MCMC`` methods the
    backtests read): parameters [chains, draws, folds, 1, ...]; sample stats [chains, draws],
    divergences any fold's, energy and leapfrog steps summed over folds."""

    samples: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]  # [chains, draws, folds]

    def get_samples(self, group_by_chain: bool = False) -> dict[str, np.ndarray]:
        return self.samples if group_by_chain else {
            k: v.reshape((-1,) + v.shape[2:]) for k, v in self.samples.items()}

    def get_extra_fields(self, group_by_chain: bool = False) -> dict[str, np.ndarray]:
        out = {"diverging": self.extra["diverging"].any(axis=-1)}
        out |= {k: self.extra[k].astype(np.float64).sum(axis=-1) for k in ("energy", "num_steps")}
        return out if group_by_chain else {k: v.reshape(-1) for k, v in out.items()}


def run_folds(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray, config: FitConfig, *,
              mask: np.ndarray, init_strategy, noise=None, parallel: bool = True
              ) -> FoldDraws:
    """NUTS on each fold (a row of ``mask`` [folds, n]) with ``config.chains`` chains each,
    the folds of a chain vectorised. ``init_strategy``: each start (``sampling.init_near``:
    dispersed around the point fit); ``parallel``: chains on separate host devices (as
    ``run_nuts`` decides), else vectorised too."""
    folds, chains = len(mask), config.chains
    model = functools.partial(law_model, law=law, likelihood=config.likelihood, link=None,
                              noise=noise)
    args = ({k: jnp.asarray(v) for k, v in x.items()},)
    fold_mask = jnp.asarray(mask)[:, None, :]  # each fold is the law on one mask row [1, n]
    kwargs = {"y": jnp.asarray(y), "acc": None}
    key_init, key_run = jax.random.split(jax.random.PRNGKey(config.seed))
    info = initialize_model(jax.random.split(key_init, chains * folds), model,
                            init_strategy=init_strategy, dynamic_args=True, model_args=args,
                            model_kwargs=kwargs | {"mask": fold_mask[0]})
    init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")

    def start(z, m, key):
        return init_kernel(z, config.warmup, dense_mass=True,
                           target_accept_prob=config.target_accept, model_args=args,
                           model_kwargs=kwargs | {"mask": m}, rng_key=key)

    def step(state):
        return jax.vmap(lambda s, m: sample_kernel(s, args, kwargs | {"mask": m}))(
            state, fold_mask)

    def chain(z, key):  # one chain of every fold: [draws, folds, ...]
        state = jax.vmap(start)(z, fold_mask, jax.random.split(key, folds))
        return fori_collect(config.warmup, config.warmup + config.draws, step, state,
                            progbar=False, transform=lambda s: (
                                s.z, s.diverging, s.energy, s.num_steps))

    run = jax.pmap(chain) if parallel else jax.vmap(chain)
    z0 = jax.tree_util.tree_map(lambda v: v.reshape(chains, folds, *v.shape[1:]),
                                info.param_info.z)
    z, div, energy, steps = run(z0, jax.random.split(key_run, chains))
    constrain = jax.vmap(lambda zi, m: info.postprocess_fn(*args, **kwargs | {"mask": m})(zi))
    params = jax.vmap(jax.vmap(lambda zf: constrain(zf, fold_mask)))(z)  # [C, S, folds, 1, ..]
    names = {p.name for p in law.params} | {"sigma", "nu"}
    samples = {k: np.asarray(v)[:, :, :, 0] for k, v in params.items() if k in names}
    extra = {"diverging": np.asarray(div), "energy": np.asarray(energy),
             "num_steps": np.asarray(steps)}  # [chains, draws, folds]
    return FoldDraws(samples, extra)
