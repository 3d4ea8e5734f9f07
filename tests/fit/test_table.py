"""Row selection (``--holdout``, ``--where``) on tables as users have them."""

import numpy as np
import pandas as pd

from datalaws.fit.table import filter_rows, split_holdout


def test_integer_size_times_tokens_does_not_wrap_around():
    # Released sweeps store params and tokens as integers; 6.9e9 * 1.4e11 passes int64.
    df = pd.DataFrame({"params": np.array([10_569_312, 411_616_256, 6_889_410_560]),
                       "tokens": np.array([211_386_240, 131_717_201_920, 137_788_211_200]),
                       "loss": [5.2, 2.7, 2.4]})
    assert df.params.dtype.kind == "i"
    train, held = split_holdout(df, "params * tokens >= 1e19")
    assert held.params.tolist() == [411_616_256, 6_889_410_560]
    assert train.params.tolist() == [10_569_312]
    assert filter_rows(df, "6 * params * tokens < 1e20").params.tolist() == [10_569_312]
    assert df.params.dtype.kind == "i"  # the caller's table is left as it was


def test_fit_names_a_bad_option_before_reading_the_table():
    import pytest

    from datalaws.fit import fit

    df = pd.DataFrame({"params": [1e7, 3e7], "tokens": [1e8, 3e8], "loss": [4.0, 3.5]})
    with pytest.raises(TypeError, match="DataFrame"):
        fit(df.to_dict("records"), "chinchilla")
    for option, value in (("method", "mcmc"), ("discrepancy", "bogus"),
                          ("accuracy", "probit")):
        with pytest.raises(ValueError, match=f"{option}='{value}'; use "):
            fit(df, "chinchilla", **{option: value})
