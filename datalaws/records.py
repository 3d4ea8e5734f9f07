"""Run records: one JSON file per training run, written atomically, collected into a table.

A run writes its own record (``write_record``) when it finishes, diverges or is preempted.
Hundreds of array tasks may write into one folder on a shared filesystem at once, so every
write goes to a temporary file in the same directory, is fsynced, then renamed over the
target: a reader sees either the old complete file or the new complete file, never a prefix.

``read_records`` turns a folder of records into the table ``datalaws.fit`` reads, with the
column conventions of the project (``params``, ``tokens``, ``mix.<domain>``, ``loss.<domain>``,
``acc.<task>``, ...). Malformed files are reported by path and skipped unless ``strict``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas is imported lazily: writers (array tasks) never need it
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "RunRecord",
    "RecordError",
    "atomic_write_text",
    "write_record",
    "load_record",
    "read_records",
    "records_to_frame",
    "read_curves",
    "validation_key",
    "parse_mixture",
]

SCHEMA_VERSION = 1
STATUSES = ("done", "diverged", "failed", "preempted", "running")
RECORD_SUFFIX = ".record.json"


class RecordError(ValueError):
    """A run record is malformed; the message names the file and the problem."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunRecord:
    """The outcome of one training run (DESIGN.md, "Data contracts")."""

    run_id: str  # stable hash of the normalised run config
    status: str  # one of STATUSES
    config: dict[str, Any] = dataclasses.field(default_factory=dict)  # the full run config
    preset: str = ""  # model preset name, e.g. "125m"
    params: int = 0  # total parameters
    params_nonembed: int = 0  # parameters outside the embedding / unembedding
    tokens: int = 0  # tokens trained on (with repetition)
    steps: int = 0  # optimizer steps taken
    batch: int = 0  # sequences per optimizer step
    seq_len: int = 0  # tokens per sequence
    mixture: dict[str, float] = dataclasses.field(default_factory=dict)  # {domain: proportion}
    pool: str | None = None  # quality pool / filter threshold name
    repetitions: float = 1.0  # epochs over the unique data
    unique_tokens: int | None = None  # unique tokens available to the run
    diversity: float | None = None  # gzip compressed/raw bytes of the training data
    syntheticity: float | None = None  # 1 / teacher perplexity of the training data
    loss: float | None = None  # validation loss on the eval composition (nats/token)
    eval_losses: dict[str, float] = dataclasses.field(default_factory=dict)  # per domain
    eval_mix: dict[str, float] = dataclasses.field(default_factory=dict)  # loss = sum w * loss_d
    validation: dict[str, Any] = dataclasses.field(default_factory=dict)  # hash, seq_len, ...
    schedule: dict[str, Any] = dataclasses.field(default_factory=dict)  # lr schedule, z-loss
    accuracy: dict[str, float] = dataclasses.field(default_factory=dict)  # per task
    chance: dict[str, float] = dataclasses.field(default_factory=dict)  # per task: guessing
    flops: float = 0.0  # training FLOPs (6N + attention, per token, times tokens)
    wall_time: float = 0.0  # seconds
    hardware: str = ""  # e.g. "cpu x8", "NVIDIA H100 80GB HBM3 x1"
    seed: int = 0
    versions: dict[str, str] = dataclasses.field(default_factory=dict)  # package versions
    git_sha: str = ""
    error: str | None = None  # what went wrong for failed / diverged runs
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self):
        if not self.run_id:
            raise RecordError("RunRecord.run_id is empty")
        if self.status not in STATUSES:
            raise RecordError(f"RunRecord.status={self.status!r}; expected one of {STATUSES}")
        if self.mixture:
            total = sum(self.mixture.values())
            if abs(total - 1.0) > 1e-6:
                raise RecordError(f"RunRecord.mixture sums to {total}, not 1: {self.mixture}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], *, source: str = "<dict>") -> RunRecord:
        if not isinstance(d, dict):
            raise RecordError(f"{source}: expected a JSON object, got {type(d).__name__}")
        version = d.get("schema_version")
        if version != SCHEMA_VERSION:
            raise RecordError(f"{source}: schema_version={version!r}, this datalaws reads "
                              f"{SCHEMA_VERSION}")
        d = {k: v for k, v in d.items() if k != "_nonfinite"}  # datalaws.io's NaN flag
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise RecordError(f"{source}: unknown fields {sorted(unknown)}")
        try:
            return cls(**d)
        except TypeError as e:  # a missing required field
            raise RecordError(f"{source}: {e}") from None


def parse_mixture(text: str) -> dict[str, float]:
    """``"web=0.7,code=0.3"`` -> ``{"code": 0.3, "web": 0.7}``, normalised to sum to 1."""
    out = {}
    for item in text.split(","):
        k, _, v = item.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ValueError(f"mixture {text!r}: write domain=proportion,...") from None
    total = sum(out.values())
    if total <= 0 or min(out.values()) < 0:
        raise ValueError(f"mixture {text!r}: proportions must be >= 0 with a positive sum")
    return {k: out[k] / total for k in sorted(out)}


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (temp file in the same dir + fsync + rename),
    readable by others as a plain write would be (``datalaws.io``)."""
    from datalaws.io import atomic_write_text as write

    return write(path, text)


def run_id_error(run_id: str) -> str | None:
    """Why ``run_id`` cannot name a record file (None if it can): it must stay inside its run
    folder, so no path separators, no leading dot, nothing empty."""
    if not run_id or run_id.startswith(".") or any(c in run_id for c in "/\\\0"):
        return (f"run_id = {run_id!r}: must be a plain file name (no '/', '\\', or leading "
                "'.'), since the record is written as <run_id>.record.json in the run folder")
    return None


def write_record(record: RunRecord, directory: str | os.PathLike) -> Path:
    """Write ``record`` atomically as ``directory/<run_id>.record.json`` and return the path."""
    from datalaws.io import dumps_json

    if (why := run_id_error(str(record.run_id))) is not None:
        raise RecordError(why)

    # NaN/inf become null, flagged under "_nonfinite": the file stays valid JSON
    text = dumps_json(record.to_dict(), indent=1, sort_keys=True)
    return atomic_write_text(Path(directory) / f"{record.run_id}{RECORD_SUFFIX}", text)


def load_record(path: str | os.PathLike) -> RunRecord:
    """Read one record; raise ``RecordError`` naming the file on any problem."""
    from datalaws.io import loads_json

    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise RecordError(f"{path}: cannot read ({e.strerror})") from None
    try:
        d = loads_json(text)  # NaN written as null + flag (datalaws.io) comes back as NaN
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, "
                          f"col {e.colno}; truncated or half-written?)") from None
    return RunRecord.from_dict(d, source=str(path))


def _flatten(r: RunRecord, path: Path | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": r.run_id, "status": r.status, "preset": r.preset, "params": r.params,
        "params_nonembed": r.params_nonembed, "tokens": r.tokens, "steps": r.steps,
        "batch": r.batch, "seq_len": r.seq_len, "pool": r.pool, "repetitions": r.repetitions,
        "unique_tokens": r.unique_tokens, "diversity": r.diversity,
        "syntheticity": r.syntheticity, "loss": r.loss, "flops": r.flops,
        "wall_time": r.wall_time, "hardware": r.hardware, "seed": r.seed, "git_sha": r.git_sha,
    }
    row.update({f"mix.{k}": v for k, v in r.mixture.items()})
    row.update({f"loss.{k}": v for k, v in r.eval_losses.items()})
    row.update({f"acc.{k}": v for k, v in r.accuracy.items()})
    row.update({f"chance.{k}": v for k, v in r.chance.items()})
    if r.validation:
        row["valid_hash"] = validation_key(r.validation)
    if path is not None:
        row["record_path"] = str(path)
    return row


def validation_key(validation: dict[str, Any]) -> str:
    """What makes two runs' validation losses comparable: the store's validation content
    hash, the sequence length and the number of windows per domain."""
    return (f"{validation.get('hash')}/T{validation.get('seq_len')}"
            f"/W{validation.get('windows')}")


def _check_one_validation(df: pd.DataFrame, directory: Path) -> None:
    if "valid_hash" not in df.columns or df.empty:
        return
    keys = df["valid_hash"].fillna("none (older record)")
    if keys.nunique() > 1:
        counts = keys.value_counts()
        raise RecordError(f"{directory}: runs were evaluated on {len(counts)} different "
                          "validation sets (" + ", ".join(f"{k}: {n} runs" for k, n in
                                                          counts.items())
                          + "); their losses are not comparable. Collect one store's runs, "
                          "or pass --mixed-validation to keep them all")


def records_to_frame(records: Iterable[RunRecord]) -> pd.DataFrame:
    """Flatten records into the project's table (missing mixture entries become 0)."""
    rows = [_flatten(r, None) for r in records]
    return _finish_frame(rows)


def _finish_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    df = pd.DataFrame(rows)
    if df.empty:
        return df
    mix = [c for c in df.columns if c.startswith("mix.")]
    df[mix] = df[mix].fillna(0.0)  # a domain absent from a run's mixture has proportion 0
    return df.sort_values("run_id", kind="stable").reset_index(drop=True)


def read_records(directory: str | os.PathLike, *, strict: bool = False,
                 recursive: bool = True, mixed_validation: bool = False) -> pd.DataFrame:
    """Collect every ``*.record.json`` under ``directory`` into a DataFrame.

    Malformed or half-written files are reported (a ``UserWarning`` naming the path) and
    skipped; with ``strict=True`` the first one raises ``RecordError`` instead. Temporary
    files of in-flight atomic writes are never read. Runs evaluated on different validation
    sets (``valid_hash``) raise ``RecordError`` unless ``mixed_validation``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise RecordError(f"{directory}: no such directory of run records")
    pattern = f"**/*{RECORD_SUFFIX}" if recursive else f"*{RECORD_SUFFIX}"
    rows = []
    for path in sorted(directory.glob(pattern)):
        if path.name.startswith("."):
            continue  # an in-flight temp file of atomic_write_text
        try:
            rows.append(_flatten(load_record(path), path))
        except RecordError as e:
            if strict:
                raise
            warnings.warn(f"skipping malformed run record: {e}", stacklevel=2)
    df = _finish_frame(rows)
    if not mixed_validation:
        _check_one_validation(df, directory)
    return df


def read_curves(directory: str | os.PathLike, *, mixed_validation: bool = False
                ) -> pd.DataFrame:
    """Validation curves of the finished runs under ``directory``: one row per (run,
    evaluated step) with ``step``, ``tokens``, ``train_loss``, ``loss`` (the run's eval
    composition), ``loss.<domain>`` and the run's columns (``params``, ``mix.<domain>``,
    quality, ``valid_hash``...), read from each run's metrics.jsonl. ``datalaws nested``
    fits this table directly."""
    import pandas as pd

    runs = read_records(directory, mixed_validation=mixed_validation)
    rows = []
    keep = [c for c in runs.columns if c not in ("loss", "steps", "tokens", "flops",
                                                 "wall_time", "status")
            and not c.startswith(("loss.", "acc.", "chance."))]
    done = runs[runs.status == "done"] if len(runs) else runs
    for _, run in done.iterrows():
        metrics = Path(run["record_path"]).parent / "metrics.jsonl"
        if not metrics.exists():
            continue
        for line in metrics.read_text().splitlines():
            m = json.loads(line) if line.strip() else {}
            if not m.get("eval"):
                continue
            rows.append({k: run[k] for k in keep} | {
                "step": m["step"], "tokens": m["step"] * run["batch"] * run["seq_len"],
                "train_loss": m.get("loss"), "loss": m.get("eval_loss")}
                | {f"loss.{d}": v for d, v in m["eval"].items()})
    if not rows:
        return pd.DataFrame()
    return pd.DataFrame(rows).sort_values(["run_id", "step"], kind="stable").reset_index(
        drop=True)
