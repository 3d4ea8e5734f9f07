"""The per-domain mixing law sampled one evaluation domain at a time.

On per-domain rows (each row one ``loss.<domain>``: one-hot evaluation weights, no size
terms) the per-domain law's domains share no data, and with their own noise (``sigma`` and
``nu`` per domain, ``Law.noise_groups``) they share only the pooled effect scales tau. Fixed
at the least squares' balanced values (empirical Bayes: ``mixing_ls.balance_point`` sets each
tau_j to the rms of its effects), the posterior factorises exactly over domains, and each
domain is sampled by its own NUTS, with its own step size and trajectory length.

Why: jointly, one step size serves every domain, and the stiffest sets it. On RegMix's 13
losses (277 parameters) every joint draw took NUTS's maximum 1023 leapfrog steps, over an
hour, and the stiffest directions were single domains' own effects; on Ye et al.'s 5-domain
sweep (22 validation losses, 26 mixtures) the joint fit took 1003 steps a draw and failed
R-hat (3.2). Each domain alone took seconds (bench/mixing.py ``regmix_each``).

The domains' draws are stitched into the law's own parameters (``e_mid`` [E], ``kappa`` [E],
``z`` [E*K*J + log tau], ``sigma`` and ``nu`` [E]): chain c of the stitched posterior is chain
c of every domain, which is a draw from the product posterior since the domains are
independent. The log likelihood keeps the table's row order; divergences are any domain's,
and the energy and leapfrog steps are summed (the joint Hamiltonian is the domains' sum).
The fixed log tau entries are constant, which diagnostics skip. A domain whose own
diagnostics fail is sampled once more, more carefully (``retry``: the fit's rerun policy),
and only that domain: its longer chains are thinned to the others' length.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping

import arviz as az
import numpy as np
from numpyro.infer import MCMC

from datalaws.fit.chains import drop_minor_modes
from datalaws.fit.diagnostics import diagnose
from datalaws.fit.laws import Law
from datalaws.fit.sampling import FitConfig, run_nuts, thinned
from datalaws.progress import Progress

__all__ = ["BlockSamples", "domain_blocks", "sample", "to_idata"]


@dataclasses.dataclass(frozen=True)
class Block:
    """One evaluation domain's share of the table: its law, rows, inputs and start."""

    law: Law
    rows: np.ndarray  # indices into the table
    x: dict[str, np.ndarray]
    y: np.ndarray
    init: dict[str, np.ndarray]


def domain_blocks(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray,
                  init: Mapping | None) -> tuple[list[Block], np.ndarray | None] | None:
    """The per-domain law's blocks and its fixed log tau (None: not pooled), or None where
    the domains share data (rows of a known composition, size terms) or a start is missing."""
    from datalaws.fit.mixing import latent_count, mixing_domains_law
    from datalaws.fit.mixing_ls import per_domain_rows
    from datalaws.fit.mixing_prior import PooledEffects

    W = per_domain_rows(law, x) if law.noise_groups and init else None
    if W is None:
        return None
    evals, domains, K = list(law.evals), list(law.domains), latent_count(law)
    J, E = len(domains), len(evals)
    prior = next(p.prior for p in law.params if p.name == "z")
    z = np.asarray(init["z"], float)
    log_tau = z[E * K * J:] if isinstance(prior, PooledEffects) else None
    scales = None if log_tau is None else np.exp(log_tau).reshape(-1, J)
    blocks = []
    for e, ev in enumerate(evals):
        sub = mixing_domains_law(domains, [ev], sizes=(), latent=K, effect_scales=scales)
        rows = np.flatnonzero(W[:, e] == 1)
        start = {}
        for p in sub.params:  # the domain's slice of each of the law's vector parameters
            v = np.asarray(init[p.name], float)
            per = v[: E * K * J].size // E if p.name == "z" else v.size // E
            start[p.name] = v[e * per:(e + 1) * per]
        blocks.append(Block(sub, rows, {r: np.asarray(x[r])[rows] for r in sub.inputs},
                            np.asarray(y)[rows], start))
    return blocks, log_tau


@dataclasses.dataclass
class BlockRun:
    """One domain's draws (grouped by chain), its sampler's stats and pointwise log
    likelihood, what was redone, and its chains stuck in a minor mode (``fit/chains.py``)."""

    samples: dict[str, np.ndarray]
    extra: dict[str, np.ndarray]
    loglik: np.ndarray | None = None  # [chains, draws, rows]; None for backtest folds
    resampled: str = ""
    stuck: tuple[int, ...] = ()


def _run(b: Block, config: FitConfig, noise, mask, retry, names: list[str]) -> BlockRun:
    """One domain's NUTS; once more with ``retry(config)`` when its diagnostics (without its
    chains stuck in a minor mode) fail, its draws thinned to ``config.draws`` so that every
    domain's chains stitch draw by draw."""
    mask = None if mask is None else np.asarray(mask)[:, b.rows]
    m = run_nuts(b.law, b.x, b.y, config, init=b.init, noise=noise, mask=mask)
    take, failed = slice(None), ""
    if mask is not None:  # backtest folds: diagnosed by the caller
        return BlockRun(_grouped(m.get_samples(True)), _grouped(m.get_extra_fields(True)))
    idata, stuck, diag = _check(b.law, m, take, names)
    if not diag.ok and retry is not None:
        again = retry(config)
        failed = f"{b.law.evals[0]} ({'; '.join(diag.failures())})"
        m = run_nuts(b.law, b.x, b.y, again, init=b.init, noise=noise, mask=mask)
        take = thinned(config, again)
        idata, stuck, _ = _check(b.law, m, take, names)
    return BlockRun(_grouped(m.get_samples(True), take), _grouped(m.get_extra_fields(True), take),
                    idata.log_likelihood["log_loss"].values, failed, tuple(stuck))


def _check(law: Law, m: MCMC, take: slice, names: list[str]):
    """A domain's ArviZ data (draws ``take``), its chains stuck in a minor mode, and its
    diagnostics without them."""
    idata = az.from_numpyro(m).isel(draw=take)
    stuck = drop_minor_modes(idata)[1] if law.minor_modes else []
    kept = idata.isel(chain=[c for c in range(idata.posterior.sizes["chain"]) if c not in stuck])
    return idata, stuck, diagnose(kept, [n for n in names if n in idata.posterior])


def _grouped(d: Mapping, take: slice = slice(None)) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[:, take] for k, v in d.items()}


@dataclasses.dataclass
class BlockSamples:
    """The domains' draws, read back as one posterior of the law (the ``MCMC`` methods that
    fits and backtests use)."""

    law: Law
    blocks: list[Block]
    runs: list[BlockRun]
    log_tau: np.ndarray | None
    n: int

    @property
    def chains(self) -> int:
        return len(next(iter(self.runs[0].samples.values())))

    @property
    def kept(self) -> list[int]:
        """Chains kept: those stuck in a minor mode in any domain are dropped from every
        domain (each domain's chains are independent of the others'), never half or more."""
        C, stuck = self.chains, {c for r in self.runs for c in r.stuck}
        return [c for c in range(C) if c not in stuck] if len(stuck) < C / 2 else list(range(C))

    def get_samples(self, group_by_chain: bool = False) -> dict[str, np.ndarray]:
        per = [{k: v[self.kept] for k, v in r.samples.items()} for r in self.runs]
        out = {}
        for name in per[0]:
            if name in ("sigma", "nu"):  # one scalar per domain: the law's [E]
                out[name] = np.stack([p[name] for p in per], axis=-1)
            elif any(name == p.name for p in self.law.params):
                out[name] = np.concatenate([p[name] for p in per], axis=-1)
        if self.log_tau is not None:  # the fixed scales, as the pooled prior holds them
            z = out["z"]
            out["z"] = np.concatenate(
                [z, np.broadcast_to(self.log_tau, z.shape[:-1] + self.log_tau.shape)], axis=-1)
        return out if group_by_chain else {k: _flat(v) for k, v in out.items()}

    def get_extra_fields(self, group_by_chain: bool = False) -> dict[str, np.ndarray]:
        per = [{k: v[self.kept] for k, v in r.extra.items()} for r in self.runs]
        out = {"diverging": np.any([p["diverging"] for p in per], axis=0)}
        for name in ("energy", "num_steps"):
            out[name] = np.sum([np.asarray(p[name], np.float64) for p in per], axis=0)
        return out if group_by_chain else {k: _flat(v) for k, v in out.items()}

    def to_idata(self) -> az.InferenceData:
        """The stitched posterior with its sample stats and pointwise log likelihood."""
        post = self.get_samples(group_by_chain=True)
        C, D = next(iter(post.values())).shape[:2]
        loglik, y = np.full((C, D, self.n), np.nan), np.full(self.n, np.nan)
        for b, r in zip(self.blocks, self.runs):
            loglik[:, :, b.rows] = r.loglik[self.kept]
            y[b.rows] = np.log(b.y)
        extra = self.get_extra_fields(group_by_chain=True)
        idata = az.from_dict(
            posterior=post, log_likelihood={"log_loss": loglik},
            observed_data={"log_loss": y},
            sample_stats={"diverging": extra["diverging"], "energy": extra["energy"],
                          "n_steps": extra["num_steps"]})
        idata.posterior.attrs["sampled_by"] = "evaluation domain"
        redone = [r.resampled for r in self.runs if r.resampled]
        if redone:
            idata.posterior.attrs["resampled"] = "; ".join(redone)
        stuck = [f"{b.law.evals[0]}: {list(r.stuck)}" for b, r in zip(self.blocks, self.runs)
                 if r.stuck]
        if stuck:
            idata.posterior.attrs["dropped_chains"] = (
                f"chains stuck in a minor mode ({'; '.join(stuck)}; Yao et al. 2022), "
                + ("dropped from every domain" if len(self.kept) < self.chains
                   else "kept: half or more of them"))
        return idata


def _flat(v: np.ndarray) -> np.ndarray:
    return v.reshape((-1,) + v.shape[2:])


def sample(law: Law, x: Mapping[str, np.ndarray], y: np.ndarray, config: FitConfig, *,
           init: Mapping | None = None, mask: np.ndarray | None = None, noise=None,
           link=None, acc=None, retry: Callable[[FitConfig], FitConfig] | None = None
           ) -> MCMC | BlockSamples:
    """NUTS on the law's posterior: by evaluation domain where it factorises over them
    (``domain_blocks``; a domain whose diagnostics fail is sampled once more with
    ``retry(config)``), else ``run_nuts`` on the whole."""
    split = None if link is not None else domain_blocks(law, x, y, init)
    if split is None:
        return run_nuts(law, x, y, config, link=link, acc=acc, init=init, mask=mask,
                        noise=noise)
    blocks, log_tau = split
    quiet = dataclasses.replace(config, progress=False)
    names = [p.name for p in blocks[0].law.params] + ["sigma", "nu"]
    runs, t0 = [], time.perf_counter()
    with Progress(len(blocks), f"sampling {law.name} one evaluation domain at a time "
                  f"({config.chains} chains x {config.warmup}+{config.draws} draws each)",
                  enabled=config.progress) as bar:
        for i, b in enumerate(blocks):
            runs.append(_run(b, quiet, noise, mask, retry, names))
            rate = (i + 1) / (time.perf_counter() - t0)
            bar.update(i + 1, f"{b.law.evals[0]} done"
                       + (" (resampled)" if runs[-1].resampled else "")
                       + f", {rate * 60:.1f} domains/min")
    return BlockSamples(law, blocks, runs, log_tau, len(y))


def to_idata(mcmc: MCMC | BlockSamples) -> az.InferenceData:
    """ArviZ data of either sampler's result."""
    return mcmc.to_idata() if isinstance(mcmc, BlockSamples) else az.from_numpyro(mcmc)
