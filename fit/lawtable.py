"""A table in the form a law reads: the law built for the table's groups (``law_for_table``)
and any table, training rows or points to predict, mapped and checked for it (``prepare``,
reached as ``Law.prepare``).

The mixing laws read ``mix.<domain>`` proportions (and, per evaluation domain, ``eval.<domain>``
weights or ``loss.<domain>`` columns turned into one row per domain); the filtering law reads
``pool.<name>`` weights (or one-hot weights from a ``pool`` column). Everything else reads
plain columns.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import pandas as pd

from datalaws.fit.laws import Law, get_law, parse_priors
from datalaws.fit.table import TableError, validate_table

__all__ = ["prepare", "law_for_table", "check_runs"]


def _pool_weights(df: pd.DataFrame, pools: Sequence[str] = ()) -> pd.DataFrame:
    """One-hot ``pool.<name>`` weights from a ``pool`` column, unless the table has them;
    pools named in ``pools`` but absent from the rows get weight 0."""
    if not any(c.startswith("pool.") for c in df.columns):
        if "pool" not in df.columns or df["pool"].isna().any():
            raise TableError("the filtering law needs a `pool` column (or pool.<name> "
                             "weights) with a value in every row")
        df = pd.concat([df, pd.get_dummies(df["pool"], prefix="pool", prefix_sep=".",
                                           dtype=float)], axis=1)
    from datalaws.fit.filtering import check_shares

    check_shares(df, pools or None)  # shares of a run's unique samples: in [0, 1], sum 1
    missing = {f"pool.{p}": 0.0 for p in pools if f"pool.{p}" not in df.columns}
    return df.assign(**missing) if missing else df


def _eval_rows(df: pd.DataFrame, evals: Sequence[str] = ()) -> pd.DataFrame:
    """Rows for the per-domain mixing law. Without ``eval.<domain>`` weights, each run's
    ``loss.<domain>`` columns become one row per domain (one-hot weights, that loss as
    ``loss``); domains named in ``evals`` but absent get weight 0."""
    if not any(c.startswith("eval.") for c in df.columns):
        loss_cols = sorted(c for c in df.columns if c.startswith("loss."))
        if not loss_cols:
            raise TableError("the mixing_domains law needs per-domain validation losses "
                             "(loss.<domain> columns), or eval.<domain> weights (the known "
                             "composition) beside an overall loss")
        base = df.drop(columns=loss_cols + (["loss"] if "loss" in df.columns else []))
        df = pd.concat([base.assign(loss=df[c], **{f"eval.{o[5:]}": float(o == c)
                                                   for o in loss_cols})
                        for c in loss_cols], ignore_index=True).dropna(subset=["loss"])
    missing = {f"eval.{e}": 0.0 for e in evals if f"eval.{e}" not in df.columns}
    return df.assign(**missing) if missing else df


def prepare(law: Law, table: pd.DataFrame, *, where: str = "the points",
            validate: bool = False, runs: bool = False) -> pd.DataFrame:
    """``table`` checked for the law and mapped to the rows it reads (pool weights,
    per-domain rows): mixtures on the simplex over the law's domains, evaluation weights.
    ``validate``: first the data contract (``validate_table``: numbers, sizes > 0, no
    duplicated rows), for a table straight from a file. ``runs``: a table of runs, whose
    ``loss.<domain>`` columns become one row per evaluation domain (points to predict need
    ``eval.<domain>`` weights instead)."""
    domains, evals = law.domains, law.evals
    if validate:
        table = validate_table(table, source=where, domains=domains)  # () refuses any mix.*
    if evals and not runs and not any(c.startswith("eval.") for c in table.columns):
        raise TableError(f"{where} need eval.<domain> weights, the composition whose loss to "
                         f"predict (one-hot for one domain); domains: {list(evals)}")
    if domains:  # known domains; proportions and evaluation weights on the simplex
        from datalaws.fit import mixing

        mixing.check_unknown_mix(table, domains, where)
        table = mixing.check_mixtures(table, domains, where=where)
    if law.pools:
        table = _pool_weights(table, law.pools)
    if evals:
        from datalaws.fit import mixing

        table = _eval_rows(table, evals)
        mixing.check_eval_weights(table, evals, where=where)
    return table


def law_for_table(df: pd.DataFrame, law_name: str, priors: Mapping[str, str], *,
                  columns: Mapping[str, str] | None = None, holdout: str | None = None
                  ) -> tuple[pd.DataFrame, Law]:
    """The law ``law_name`` built for the table's groups (its domains, evaluation domains,
    pools; for the mixing laws the sizes the rows vary and the implicit form's K), with the
    prior overrides, and the table in the form it reads."""
    domains = sorted(c[4:] for c in df.columns if c.startswith("mix."))
    mixing = law_name.startswith("mixing")
    if mixing and not domains:
        raise TableError(f"the {law_name} law needs mix.<domain> columns (training "
                         "proportions)")
    sizes = None
    if mixing:  # checked proportions; size terms only where varied
        from datalaws.fit.mixing_fit import prepare_table

        df, law_name, sizes = prepare_table(df, law_name, domains, columns=columns,
                                            holdout=holdout)
    if law_name == "filtering":
        df = _pool_weights(df)
    if law_name.startswith("mixing_domains"):  # mixing_domainsK: K latent terms (issue 20)
        df = _eval_rows(df)
    pools = sorted(c[5:] for c in df.columns if c.startswith("pool."))
    evals = sorted(c[5:] for c in df.columns if c.startswith("eval."))
    law = get_law(law_name, domains=domains, pools=pools, evals=evals, sizes=sizes)
    return df, law.with_priors(parse_priors(priors))


def check_runs(train: pd.DataFrame, law: Law) -> None:
    """At least 5 runs; 5-9 (or fewer than twice the parameters) fit with a warning; the
    mixing laws need as many distinct mixtures as they identify parameters."""
    n, n_min = len(train), max(10, 2 * len(law.params) + 2)
    if n < 5:
        raise TableError(f"law {law.name!r} needs at least 5 runs to fit (got {n})")
    if n < n_min:
        warnings.warn(f"law {law.name!r} has {len(law.params)} parameters and only {n} runs: "
                      "the fit leans on its priors, and no backtest is possible, so the "
                      f"discrepancy uses a default prior twice as wide", stacklevel=4)
    if law.family == "mixing":
        from datalaws.fit.mixing import check_rows

        check_rows(law, train)
