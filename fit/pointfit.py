"""The papers' baseline as a ``Fit`` (``fit(..., method="point")``): every posterior draw is
the Huber least-squares point fit, and the noise is the robust spread of its log residuals, so
``predict``, ``plan`` and ``best_mixture`` read it like a posterior."""

from __future__ import annotations

from collections.abc import Mapping

import arviz as az
import jax.numpy as jnp
import numpy as np
import pandas as pd

from datalaws.fit.diagnostics import Diagnostics
from datalaws.fit.laws import Law
from datalaws.fit.result import Fit
from datalaws.fit.sampling import FitConfig
from datalaws.fit.table import LawData

__all__ = ["point_result", "POINT_DRAWS"]

POINT_DRAWS = 1000  # copies of the point fit in a point result's "posterior"


def point_result(law: Law, data: LawData, scales: Mapping[str, float], x, point: dict,
                 config: FitConfig, provenance: dict, held: pd.DataFrame) -> Fit:
    """A ``Fit`` holding the Huber least-squares point fit (no parameter uncertainty)."""
    from datalaws.fit import api

    mu = np.asarray(law.fn({r: jnp.asarray(v) for r, v in x.items()}, point))
    resid = np.log(data.y) - np.log(mu)
    sigma = max(1.4826 * float(np.median(np.abs(resid - np.median(resid)))), 1e-6)
    post = {n: np.broadcast_to(np.asarray(v, float), (1, POINT_DRAWS) + np.shape(v)).copy()
            for n, v in point.items()}
    post["sigma"] = np.full((1, POINT_DRAWS), sigma)
    cfg = type(config)(**{**config.__dict__, "likelihood": "normal"})
    result = Fit(law=law, columns=dict(data.columns), scales=dict(scales),
                 idata=az.from_dict(posterior=post), point=point, config=cfg,
                 discrepancy=api.discrepancy_section(law, data, x, cfg, point, {}, "none"),
                 diagnostics=Diagnostics({}),  # nothing sampled: nothing to diagnose
                 data=provenance, method="point")
    if len(held):
        result.holdout = api.holdout_scores(result, held)
    return result
