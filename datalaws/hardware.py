"""Dense bf16 peak FLOP/s per chip (vendor data sheets, no sparsity), written down once.

Used by model/ for MFU and by fit/ to turn GPU-hours into a FLOP budget.
"""

__all__ = ["PEAK_BF16", "peak_of"]

PEAK_BF16 = {
    "h100": 989e12, "h200": 989e12, "a100": 312e12,
    "tpu v4": 275e12, "tpu v5 lite": 197e12, "tpu v5e": 197e12, "tpu v5p": 459e12,
    "tpu v6 lite": 918e12, "tpu v6e": 918e12,
    "cpu": 1e12,  # nominal, so CPU MFU prints something comparable between runs
}


def peak_of(kind: str) -> float | None:
    """Peak of a device kind or hardware name ("NVIDIA H100 80GB HBM3", "h100", "v5p")."""
    kind = kind.lower()
    for name, peak in PEAK_BF16.items():
        if name in kind or (name.startswith("tpu ") and kind == name[4:]):
            return peak
    return None
