"""A fitted law as one typed object: ``Fit``, and its folder (``Fit.save`` / ``Fit.load``).

The state a fit carries is its fields: the law (name, groups and priors), the column mapping
and input scales, the posterior (ArviZ InferenceData), the point fit, the discrepancy (k's
posterior draws and the backtest table), the diagnostics and the held-out scores. ``predict``,
``plan``, ``report`` and ``compare`` read these fields; ``summary`` is a human-readable export
(written as ``summary.json``) and is never read back.

A fit folder holds ``fit.json`` (every field but the posterior; priors as numbers, never as
formatted text), ``posterior.nc`` and the ``summary.json`` export. Folders written before
``fit.json`` existed are refused with one line that says to refit (``FitFormatError``).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import numpyro.distributions as dist

from datalaws.fit.diagnostics import Diagnostics
from datalaws.fit.laws import NOISE_PRIORS, Law, get_law
from datalaws.fit.model import AccuracyLink
from datalaws.fit.sampling import FitConfig

__all__ = ["Fit", "FitFormatError", "FORMAT", "dist_to_dict", "dist_from_dict", "prior_str",
           "write_netcdf"]

FORMAT = 3  # fit.json's format; 1 was summary.json read back as state (priors as text)
# 2: the same, but a sigmoid accuracy link's ceiling was 1 - delta (now 1 - delta (1 - floor)):
# its links would predict differently now, so only format-2 fits without a sigmoid link load


class FitFormatError(ValueError):
    """A fit folder this version cannot read (older format, missing or corrupt file)."""


def prior_str(d: dist.Distribution) -> str:
    """A prior for people to read, e.g. ``LogNormal(-0.6931, 1)``; never parsed back."""
    args = ", ".join(f"{np.asarray(getattr(d, a)).item():.4g}" for a in d.arg_constraints
                     if np.asarray(getattr(d, a)).size == 1)
    return f"{type(d).__name__}({args})"


def dist_to_dict(d: dist.Distribution) -> dict | None:
    """A numpyro distribution as numbers: ``{"dist": "LogNormal", "loc": .., "scale": ..}``
    (vector priors nest their base). None for a distribution numpyro does not name (the law's
    own classes, e.g. the mixing laws' pooled effects: the law rebuilds those)."""
    if isinstance(d, dist.Independent):
        base = dist_to_dict(d.base_dist)
        return None if base is None else {"dist": "Independent", "base": base,
                                          "reinterpreted_batch_ndims":
                                              d.reinterpreted_batch_ndims}
    if isinstance(d, dist.ExpandedDistribution):
        base = dist_to_dict(d.base_dist)
        return None if base is None else {"dist": "Expanded", "base": base,
                                          "batch_shape": list(d.batch_shape)}
    name = type(d).__name__
    if getattr(dist, name, None) is not type(d):
        return None
    accepted = inspect.signature(type(d).__init__).parameters
    return {"dist": name} | {a: np.asarray(getattr(d, a)).tolist() for a in d.arg_constraints
                             if a in accepted}


def dist_from_dict(spec: Mapping[str, Any]) -> dist.Distribution:
    """Inverse of ``dist_to_dict``."""
    kind = spec["dist"]
    if kind == "Independent":
        return dist.Independent(dist_from_dict(spec["base"]), spec["reinterpreted_batch_ndims"])
    if kind == "Expanded":
        return dist_from_dict(spec["base"]).expand(spec["batch_shape"])
    if not isinstance(getattr(dist, kind, None), type):
        raise FitFormatError(f"prior {kind!r} is not a numpyro distribution")
    args = {k: (np.asarray(v) if isinstance(v, list) else v)
            for k, v in spec.items() if k != "dist"}
    return getattr(dist, kind)(**args)


@dataclasses.dataclass(eq=False)
class Fit:
    """A fitted law: everything ``predict``, ``plan``, ``report`` and ``compare`` read."""

    law: Law  # name, groups (law.groups) and priors (law.params) as fitted
    columns: dict[str, str]  # role -> table column
    scales: dict[str, float]  # role -> reference value the inputs were divided by
    idata: az.InferenceData  # the posterior (and sampler statistics)
    point: dict[str, Any]  # the Huber point fit (the chains' start)
    config: FitConfig
    discrepancy: dict  # k's posterior draws, per-axis k, the backtest table, the hull
    diagnostics: Diagnostics
    noise: dict[str, dist.Distribution] = dataclasses.field(default_factory=dict)  # overrides
    link: AccuracyLink | None = None
    accuracy: dict | None = None  # the accuracy link's fit: mode, floor source, pearson r
    holdout: dict = dataclasses.field(default_factory=dict)  # held-out scores per quantity
    data: dict = dataclasses.field(default_factory=dict)  # data_hash, n_rows, n_holdout, expr
    method: str = "nuts"  # or "point": the Huber fit alone, its residual spread as noise
    timings: dict = dataclasses.field(default_factory=dict)

    @property
    def discrepancy_k(self) -> float:
        """The discrepancy scale (median of its posterior; 0 without a discrepancy)."""
        return float(self.discrepancy.get("k", 0.0))

    @property
    def likelihood(self) -> str:
        return self.config.likelihood

    @property
    def tasks(self) -> tuple[str, ...]:
        """The accuracy tasks the fit predicts (none without a link)."""
        return tuple(self.link.tasks) if self.link else ()

    def samples(self) -> dict[str, np.ndarray]:
        """Posterior draws flattened over chains: name -> [draws, ...]."""
        post = self.idata.posterior
        return {v: post[v].values.reshape(-1, *post[v].shape[2:]) for v in post.data_vars}

    @property
    def summary(self) -> dict:
        """The human-readable export (``summary.json``): never read back as state."""
        from datalaws.fit.export import summary

        return summary(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Fit):
            return NotImplemented
        return (_canon(_state(self)) == _canon(_state(other))
                and all(self.idata[g].equals(other.idata[g]) for g in self.idata.groups())
                and set(self.idata.groups()) == set(other.idata.groups()))

    def save(self, out: str | Path) -> Path:
        """Write ``posterior.nc``, ``fit.json`` and the ``summary.json`` export into ``out``,
        each atomically (``fit.json`` after the posterior it describes)."""
        from datalaws.io import atomic_write_text, dumps_json

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        write_netcdf(self.idata, out / "posterior.nc")
        atomic_write_text(out / "fit.json", dumps_json(_state(self), indent=1))
        atomic_write_text(out / "summary.json", dumps_json(self.summary, indent=1,
                                                           default=float))
        return out

    @classmethod
    def load(cls, path: str | Path) -> Fit:
        """Read a folder written by ``save``; one-line errors name the file and what to do."""
        from datalaws.io import loads_json

        path = Path(path)
        if not (path / "fit.json").exists():
            if (path / "summary.json").exists():
                raise FitFormatError(f"{path}: a fit saved by an older datalaws (no fit.json); "
                                     "refit it with `datalaws fit` to use it")
            raise FitFormatError(f"{path / 'fit.json'}: missing; is {path} a `datalaws fit` "
                                 "output?")
        if not (path / "posterior.nc").exists():
            raise FitFormatError(f"{path / 'posterior.nc'}: missing; refit {path}")
        try:
            state = loads_json((path / "fit.json").read_text())
        except json.JSONDecodeError as e:
            raise FitFormatError(f"{path / 'fit.json'}: corrupt ({e.msg})") from None
        old_link = state.get("format") == 2 and (state.get("link") or {}).get("form") == "sigmoid"
        if state.get("format") not in (2, FORMAT) or old_link:
            why = " (its sigmoid accuracy link has the old ceiling)" if old_link else ""
            raise FitFormatError(f"{path / 'fit.json'}: format {state.get('format')!r}{why}, "
                                 f"this datalaws reads {FORMAT}; refit it")
        if "noise" in (state.get("priors") or {}):  # before sigma and nu per domain
            raise FitFormatError(f"{path / 'fit.json'}: its evaluation domains' noise is "
                                 "relative to one sigma (an older datalaws; each has its own "
                                 "sigma and nu now); refit it")
        try:
            idata = az.from_netcdf(str(path / "posterior.nc"))
        except (OSError, ValueError) as e:  # truncated or not NetCDF at all
            raise FitFormatError(f"{path / 'posterior.nc'}: corrupt ({e}); refit {path}"
                                 ) from None
        try:
            return _from_state(state, idata)
        except (KeyError, TypeError) as e:  # a hand-edited or truncated state
            raise FitFormatError(f"{path / 'fit.json'}: unreadable ({type(e).__name__}: {e}); "
                                 "refit it") from None


def write_netcdf(idata: az.InferenceData, path: Path) -> None:
    """NetCDF written to a temp file beside ``path``, synced, then renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        idata.to_netcdf(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _plain(x: Any) -> Any:
    """Numbers and lists only (what JSON holds): arrays, tuples and numpy scalars unwrapped,
    so a saved state and its reload compare equal."""
    if isinstance(x, Mapping):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _plain(x.tolist())
    return x


def _canon(state: dict) -> str:
    """One text per state: NaN (a one-chain R-hat) equals NaN, tuples equal lists."""
    return json.dumps(state, sort_keys=True, allow_nan=True)


def _state(f: Fit) -> dict:
    """Every field but the posterior, as numbers and text (fit.json)."""
    law = f.law
    return _plain({
        "format": FORMAT, "law": law.name, "groups": law.groups,
        "priors": {p.name: dist_to_dict(p.prior) for p in law.params},
        "noise": {k: dist_to_dict(v) for k, v in f.noise.items()},
        "columns": f.columns, "scales": f.scales, "point": f.point,
        "config": dataclasses.asdict(f.config), "discrepancy": f.discrepancy,
        "diagnostics": f.diagnostics.checks,
        "link": dataclasses.asdict(f.link) if f.link else None, "accuracy": f.accuracy,
        "holdout": f.holdout, "data": f.data, "method": f.method, "timings": f.timings})


def _from_state(state: dict, idata: az.InferenceData) -> Fit:
    s = state
    law = get_law(s["law"], **s["groups"])  # the law rebuilt over the fit's groups
    priors = {n: dist_from_dict(v) for n, v in s["priors"].items() if v is not None}
    law = law.with_priors(priors)
    link = s["link"]
    if link is not None:
        link = AccuracyLink(**(link | {"tasks": tuple(link["tasks"]),
                                       "floors": tuple(link["floors"])}))
    noise = {k: dist_from_dict(v) for k, v in s["noise"].items() if k in NOISE_PRIORS}
    return Fit(law=law, columns=s["columns"], scales=s["scales"], idata=idata,
               point=s["point"], config=FitConfig(**s["config"]),
               discrepancy=s["discrepancy"], diagnostics=Diagnostics(s["diagnostics"]),
               noise=noise, link=link, accuracy=s["accuracy"], holdout=s["holdout"],
               data=s["data"], method=s["method"], timings=s["timings"])
