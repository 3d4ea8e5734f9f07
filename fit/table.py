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

__all__ = ["TableError", "LawData", "read_table", "law_data", "table_hash", "split_holdout"]


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


def split_holdout(df: pd.DataFrame, expr: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split rows by a pandas query (``"params >= 2e9"`` selects the held-out rows)."""
    if not expr:
        return df, df.iloc[:0]
    try:
        mask = df.eval(expr)
    except Exception as e:
        raise TableError(f"--holdout {expr!r} is not a valid expression on the table's "
                         f"columns ({e})") from None
    mask = np.asarray(mask, dtype=bool)
    if mask.all() or not mask.any():
        raise TableError(f"--holdout {expr!r} selects {mask.sum()} of {len(df)} rows; it must "
                         "leave rows on both sides")
    return df[~mask], df[mask]
