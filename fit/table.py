"""From a table of runs (ours or published) to the arrays a law needs, with clear errors.

Column conventions (DESIGN.md): ``params``, ``tokens``, ``unique_tokens``, ``repetitions``,
``diversity``, ``syntheticity``, ``mix.<domain>``, ``loss``, ``loss.<domain>``, ``acc.<task>``.
Published CSVs are mapped onto them with ``columns={"N": "N", "D": "D"}`` (role -> column).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["TableError", "LawData", "read_table", "law_data", "table_hash", "split_holdout",
           "validate_table", "SIZE_COLUMNS", "filter_rows"]


class TableError(ValueError):
    """The table cannot be fitted; the message says which column and which rows."""


@dataclasses.dataclass(frozen=True)
class LawData:
    """Raw inputs by role, observed targets, and the reference scales used to normalise."""

    inputs: dict[str, np.ndarray]  # role -> raw values, shape [n]
    y: np.ndarray | None  # observed loss, shape [n] (None for prediction points)
    acc: dict[str, np.ndarray]  # task -> observed accuracy, shape [n] (may hold NaN)
    columns: dict[str, str]  # role -> column used

    def normalised(self, scales: Mapping[str, float]) -> dict[str, np.ndarray]:
        return {r: v / scales[r] if r in scales else v for r, v in self.inputs.items()}


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet table of runs; a missing or unreadable file names itself."""
    path = Path(path)
    if not path.exists():
        raise TableError(f"{path}: no such file")
    try:
        if path.suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as e:  # pandas raises many types; all mean "not a table"
        raise TableError(f"{path}: cannot read as a table ({e})") from None


def table_hash(df: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(df, index=False).values.tobytes()
                          ).hexdigest()[:16]


def _column(df: pd.DataFrame, col: str, role: str, *, positive: bool,
            nonneg: bool = False) -> np.ndarray:
    if col not in df.columns:
        raise TableError(f"column {col!r} (for {role}) is missing; the table has "
                         f"{list(df.columns)}. Map it with --columns {role}=<column>")
    try:
        v = df[col].to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        raise TableError(f"column {col!r} is not numeric") from None
    bad = ~np.isfinite(v)
    if bad.any():
        raise TableError(f"column {col!r} has NaN/inf in rows {_rows(df, bad)}")
    if positive and (v <= 0).any():
        raise TableError(f"column {col!r} must be > 0; rows {_rows(df, v <= 0)} are not")
    if nonneg and (v < 0).any():
        raise TableError(f"column {col!r} must be >= 0; rows {_rows(df, v < 0)} are not")
    return v


def _rows(df: pd.DataFrame, mask: np.ndarray) -> str:
    idx = list(df.index[mask])
    return ", ".join(map(str, idx[:10])) + (f" (+{len(idx) - 10} more)" if len(idx) > 10 else "")


# the data contract (DESIGN.md): these columns, where present, are counts that must be > 0
# (params_nonembed and flops are derived and may be 0 where unknown: numeric only)
SIZE_COLUMNS = ("params", "tokens", "unique_tokens", "N", "D")
_NUMERIC = SIZE_COLUMNS + ("params_nonembed", "flops", "steps", "repetitions", "diversity",
                           "syntheticity", "loss")


def _is_numeric(name: str) -> bool:
    return name in _NUMERIC or name.startswith(("mix.", "loss.", "acc.", "eval."))


def _named_rows(df: pd.DataFrame, mask) -> str:
    mask = np.asarray(mask, dtype=bool)
    if "run_id" in df.columns:
        ids = [str(x) for x in df["run_id"][mask]]
        return "rows " + _rows(df, mask) + " (run_id " + ", ".join(ids[:5]) + \
            (" ..." if len(ids) > 5 else "") + ")"
    return "rows " + _rows(df, mask)


def validate_table(df: pd.DataFrame, *, source: str = "table",
                   domains: Sequence[str] | None = None, tol: float = 0.01) -> pd.DataFrame:
    """Check a table of runs against the data contract; raise ``TableError`` in one line.

    Refused: no rows; duplicate run ids or duplicated rows; a contract column (sizes,
    ``loss``, ``mix.*``, ``loss.*``, ``acc.*``) that is not numeric; inf anywhere in them;
    NaN in sizes or proportions; sizes <= 0; proportions outside [0, 1] or rows whose
    ``mix.*`` do not sum to 1 (within ``tol``: published mixtures are rounded per
    domain); ``mix.*`` domains not in ``domains``. NaN in a
    loss or accuracy is allowed here (a diverged run has none); the fit refuses it in the
    columns it uses. Returns ``df`` with the contract columns as floats.
    """
    if len(df) == 0:
        raise TableError(f"{source}: the table has no rows")
    if "run_id" in df.columns and df["run_id"].duplicated().any():
        dup = df["run_id"].duplicated(keep=False).to_numpy()
        raise TableError(f"{source}: duplicate run ids in {_named_rows(df, dup)}")
    body = df.drop(columns=[c for c in ("record_path", "run_id") if c in df.columns])
    if body.duplicated().any():
        dup = body.duplicated(keep=False).to_numpy()
        raise TableError(f"{source}: duplicated {_named_rows(df, dup)} (identical in every "
                         "column); drop the copies")
    df = df.copy()
    for c in [c for c in df.columns if _is_numeric(c)]:
        v = pd.to_numeric(df[c], errors="coerce")
        bad = v.isna().to_numpy() & df[c].notna().to_numpy()
        if bad.any():
            raise TableError(f"{source}: column {c!r} is not numeric in {_named_rows(df, bad)} "
                             f"(e.g. {df[c][bad].iloc[0]!r})")
        df[c] = v.astype(np.float64)
        x = df[c].to_numpy()
        if np.isinf(x).any():
            raise TableError(f"{source}: column {c!r} has inf in {_named_rows(df, np.isinf(x))}")
        strict = c in SIZE_COLUMNS or c.startswith("mix.")
        if strict and c != "unique_tokens" and np.isnan(x).any():
            raise TableError(f"{source}: column {c!r} has NaN in {_named_rows(df, np.isnan(x))}")
        if c in SIZE_COLUMNS and (x <= 0).any():
            raise TableError(f"{source}: column {c!r} must be > 0; {_named_rows(df, x <= 0)} "
                             "are not")
    _check_mixture(df, source, domains, tol)
    return df


def _check_mixture(df: pd.DataFrame, source: str, domains: Sequence[str] | None,
                   tol: float) -> None:
    mix = [c for c in df.columns if c.startswith("mix.")]
    if not mix:
        return
    if domains is not None:
        unknown = [c for c in mix if c[4:] not in set(domains)]
        if unknown:
            raise TableError(f"{source}: unknown domain column(s) {unknown}; the fit knows "
                             f"{sorted(domains)}")
    m = df[mix].to_numpy()
    out = ((m < 0) | (m > 1)).any(axis=1)
    if out.any():
        raise TableError(f"{source}: mixture proportions (mix.*) must lie in [0, 1]; "
                         f"{_named_rows(df, out)} do not")
    off = np.abs(m.sum(axis=1) - 1) > tol
    if off.any():
        first = float(m.sum(axis=1)[off][0])
        raise TableError(f"{source}: mixture proportions ({len(mix)} mix.* columns) must sum "
                         "to 1; "
                         f"{_named_rows(df, off)} sum to e.g. {first:.4g}")


def law_data(df: pd.DataFrame, inputs: Mapping[str, str], *, target: str | None = "loss",
             columns: Mapping[str, str] | None = None, tasks: list[str] | None = None,
             nonneg: Sequence[str] = ()) -> LawData:
    """Pull a law's inputs (``{role: default column}``) and its target out of ``df``.

    ``columns`` overrides the column of a role (or of ``loss``). Every input and the target
    must be finite and positive; accuracy columns may be missing for some rows (NaN).
    """
    columns = dict(columns or {})
    unknown = set(columns) - set(inputs) - {"loss"}
    if unknown:
        raise TableError(f"--columns names unknown role(s) {sorted(unknown)}; this law uses "
                         f"{sorted(inputs)} and loss")
    used = {role: columns.get(role, col) for role, col in inputs.items()}
    if len(df) == 0:
        raise TableError("the table has no rows")
    # sizes and token counts must be > 0; proportions and epochs only >= 0
    x = {role: _column(df, col, role, positive=role not in nonneg, nonneg=role in nonneg)
         for role, col in used.items()}
    y = None
    if target is not None:
        ycol = columns.get("loss", target)
        y = _column(df, ycol, "loss", positive=True)
        used["loss"] = ycol
    acc = {}
    for t in tasks or []:
        col = f"acc.{t}"
        if col not in df.columns:
            raise TableError(f"accuracy column {col!r} is missing")
        a = df[col].to_numpy(dtype=np.float64)
        if ((a < 0) | (a > 1)).any():
            raise TableError(f"{col!r} must lie in [0, 1]")
        acc[t] = a
    return LawData(inputs=x, y=y, acc=acc, columns=used)


def _select(df: pd.DataFrame, expr: str, flag: str) -> np.ndarray:
    """Rows where a pandas expression holds; a bad expression or a non-boolean result is one
    line naming the flag and the columns. Integer columns are read as float64: sizes times
    token counts (``params * tokens >= 1e20``) pass int64's 9.2e18 and would wrap around."""
    ints = df.select_dtypes(include="integer").columns
    if len(ints):
        df = df.astype({c: np.float64 for c in ints})
    try:
        mask = df.eval(expr)
    except Exception as e:
        raise TableError(f"{flag} {expr!r} is not a valid expression on the table's "
                         f"columns {list(df.columns)} ({e})") from None
    mask = np.asarray(mask)
    if mask.shape != (len(df),) or mask.dtype != bool:
        raise TableError(f"{flag} {expr!r} must give True/False per row, e.g. 'params >= 2e9'")
    return mask


def filter_rows(df: pd.DataFrame, expr: str | None) -> pd.DataFrame:
    """Keep the rows where ``expr`` holds (``--where "loss < 6 and name_consistent"``)."""
    if not expr:
        return df
    mask = _select(df, expr, "--where")
    if not mask.any():
        raise TableError(f"--where {expr!r} keeps none of the {len(df)} rows")
    return df[mask]


def split_holdout(df: pd.DataFrame, expr: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows by a pandas query (``"params >= 2e9"`` selects the held-out rows)."""
    if not expr:
        return df, df.iloc[:0]
    mask = _select(df, expr, "--holdout")
    if mask.all() or not mask.any():
        raise TableError(f"--holdout {expr!r} selects {mask.sum()} of {len(df)} rows; it must "
                         "leave rows on both sides")
    return df[~mask], df[mask]
