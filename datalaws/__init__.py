"""datalaws: data-aware scaling laws with calibrated posteriors.

Subpackages: ``datalaws.data`` (corpora -> token stores with quality), ``datalaws.model``
(Flax NNX training), ``datalaws.launch`` (sweeps), ``datalaws.fit`` (Bayesian laws, plans,
reports). This root package holds the run-record store and the CLI.
"""

from datalaws.records import (
    SCHEMA_VERSION,
    RecordError,
    RunRecord,
    atomic_write_text,
    load_record,
    read_records,
    records_to_frame,
    write_record,
)

__version__ = "0.1.0"

__all__ = [
    "SCHEMA_VERSION",
    "RecordError",
    "RunRecord",
    "atomic_write_text",
    "load_record",
    "read_records",
    "records_to_frame",
    "write_record",
    "__version__",
]
