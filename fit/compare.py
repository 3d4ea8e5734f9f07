"""Laws fitted to one table, ranked: by their out-of-range backtest log score (the folds every
fit shares), with PSIS-LOO beside it (``datalaws compare``)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import arviz as az
import pandas as pd

from datalaws.fit.backtest import backtest_ranking
from datalaws.fit.result import Fit

__all__ = ["compare"]


def compare(fits: Sequence[Fit], names: Sequence[str], *, rank_by: str = "backtest"
            ) -> tuple[pd.DataFrame, str]:
    """One row per fit, best first, and what it is ranked by (``backtest``, or ``loo`` when
    asked or when no fit has a backtest score)."""
    if len({f.data.get("data_hash") for f in fits}) > 1:
        raise ValueError("PSIS-LOO compares laws fitted to the same table; these fits saw "
                         f"{len({f.data.get('data_hash') for f in fits})} different tables")
    no_loo = [n for n, f in zip(names, fits) if "log_likelihood" not in f.idata.groups()]
    if no_loo:  # a point fit keeps no pointwise log likelihood
        raise ValueError(f"{', '.join(no_loo)}: no pointwise log likelihood to compare (a "
                         "--method point fit?); refit with NUTS")
    with warnings.catch_warnings():  # Pareto k > 0.7: the table's ``warning`` column says it
        warnings.simplefilter("ignore", UserWarning)
        loo = az.compare({n: f.idata for n, f in zip(names, fits)}, var_name="log_loss")
    bt = pd.DataFrame(backtest_ranking({n: {"discrepancy": f.discrepancy}
                                        for n, f in zip(names, fits)}))
    table = bt.set_index("fit").join(loo[["elpd_loo", "p_loo", "elpd_diff", "se", "weight",
                                          "warning"]].rename(columns={"weight": "loo_weight"}))
    table["loo_rank"] = loo["rank"]
    if rank_by == "backtest" and bt["backtest_log_score"].notna().any():
        return table, "backtest"
    return table.sort_values("elpd_loo", ascending=False), "loo"
