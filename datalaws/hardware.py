"""Chips written down once: dense bf16 peak FLOP/s and memory per chip (vendor data sheets,
no sparsity).

Used by model/ for MFU and preflight (memory against HBM) and by fit/ to turn GPU-hours into
a FLOP budget. Device kinds are matched as JAX reports them ("TPU v5 lite" is v5e, "TPU v5"
is v5p, "NVIDIA H100 80GB HBM3" an H100 SXM); an accelerator missing here is an error
(``peak_for_device``), never a silent CPU fallback that would inflate MFU by orders of
magnitude.
"""

from __future__ import annotations

__all__ = ["PEAK_BF16", "HBM_BYTES", "peak_of", "hbm_of", "peak_for_device", "canonical"]

GiB = 1024**3

PEAK_BF16 = {
    # NVIDIA (SXM unless named), dense bf16 tensor-core peaks
    "gb200": 2500e12, "b200": 2250e12, "b100": 1750e12,
    "h200": 989e12, "gh200": 989e12, "h100": 989e12, "h100 nvl": 835e12, "h100 pcie": 756e12,
    "h800": 989e12, "h20": 148e12,
    "a100": 312e12, "a800": 312e12, "a10g": 70e12, "a10": 125e12,
    "l40s": 362e12, "l40": 181e12, "l4": 121e12,
    # Google TPU, per chip
    "tpu v4": 275e12, "tpu v5e": 197e12, "tpu v5p": 459e12, "tpu v6e": 918e12,
    "tpu7x": 2307e12,
    "cpu": 1e12,  # nominal, so CPU MFU prints something comparable between local runs
}

HBM_BYTES = {
    "gb200": 186 * GiB, "b200": 180 * GiB, "b100": 180 * GiB,
    "h200": 141 * GiB, "gh200": 96 * GiB, "h100": 80 * GiB, "h100 nvl": 94 * GiB,
    "h100 pcie": 80 * GiB, "h800": 80 * GiB, "h20": 96 * GiB,
    "a100": 80 * GiB, "a800": 80 * GiB, "a10g": 24 * GiB, "a10": 24 * GiB,
    "l40s": 48 * GiB, "l40": 48 * GiB, "l4": 24 * GiB,
    "tpu v4": 32 * GiB, "tpu v5e": 16 * GiB, "tpu v5p": 95 * GiB, "tpu v6e": 32 * GiB,
    "tpu7x": 192 * GiB,
}

# JAX device_kind strings (lower case) that do not contain the table's name
_ALIASES = {
    "tpu v5 lite": "tpu v5e", "tpu v5litepod": "tpu v5e", "tpu v5": "tpu v5p",
    "tpu v6 lite": "tpu v6e", "tpu v6e": "tpu v6e", "tpu v4": "tpu v4", "tpu7x": "tpu7x",
    "v5e": "tpu v5e", "v5p": "tpu v5p", "v6e": "tpu v6e", "v4": "tpu v4", "v5litepod": "tpu v5e",
}


def canonical(kind: str) -> str | None:
    """The table's name for a device kind or hardware name, or None if unknown."""
    k = " ".join(kind.lower().replace("-", " ").replace("_", " ").split())
    if k in _ALIASES:
        return _ALIASES[k]
    if k in PEAK_BF16:
        return k
    if k.startswith("tpu"):
        return None  # TPU kinds are matched exactly: "tpu v5" is a prefix of "tpu v5 lite"
    words = k.split()
    # longest first so "h100 pcie" wins over "h100" and "l40s" over "l40"
    for name in sorted(PEAK_BF16, key=len, reverse=True):
        parts = name.split()
        if any(words[i:i + len(parts)] == parts for i in range(len(words))):
            return name
    return None


def peak_of(kind: str) -> float | None:
    """Peak of a device kind or hardware name ("NVIDIA H100 80GB HBM3", "h100", "v5p")."""
    name = canonical(kind)
    return None if name is None else PEAK_BF16[name]


def hbm_of(kind: str) -> int | None:
    """Memory per chip in bytes, or None if unknown."""
    name = canonical(kind)
    return None if name is None else HBM_BYTES.get(name)


def peak_for_device(kind: str, platform: str) -> float:
    """Peak of a JAX device; unknown accelerators are an error naming the kind."""
    if platform == "cpu":
        return PEAK_BF16["cpu"]
    peak = peak_of(kind)
    if peak is None:
        raise ValueError(f"unknown {platform} device kind {kind!r}: its dense bf16 peak is not "
                         f"in datalaws/hardware.py PEAK_BF16 (known: "
                         f"{', '.join(k for k in PEAK_BF16 if k != 'cpu')}); add it there so "
                         "MFU is measured against the right peak")
    return peak
