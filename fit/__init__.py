"""datalaws.fit: Bayesian scaling laws in NumPyro, checked and calibrated.

Works on any table of runs (ours or published); never imports ``datalaws.model``.
"""

from datalaws.fit.api import DEFAULT_QUANTILES, fit, predict
from datalaws.fit.infer import AccuracyLink, Diagnostics, FitConfig, diagnose, law_model, point_fit
from datalaws.fit.laws import LAWS, Law, Param, get_law, parse_prior
from datalaws.fit.result import Fit
from datalaws.fit.table import TableError, read_table

__all__ = [
    "AccuracyLink", "DEFAULT_QUANTILES", "Diagnostics", "Fit", "FitConfig", "LAWS", "Law",
    "Param", "TableError", "diagnose", "fit", "get_law", "law_model", "parse_prior",
    "point_fit", "predict", "read_table",
]
