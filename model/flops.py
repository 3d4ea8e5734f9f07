"""FLOP accounting, written down once: FLOPs per token and the chips' dense bf16 peaks.

FLOPs per trained token = 6 * non-embedding params (forward + backward matmuls)
                        + 12 * layers * seq_len * d_model (attention scores and values;
                          not halved for causal masking, as in Chinchilla and PaLM's MFU).
The embedding lookup is free; the output projection is counted with the non-embedding
params only when untied (it is a real matmul), see ``flops_per_token``.
"""

from __future__ import annotations

import jax

from datalaws.hardware import PEAK_BF16, peak_for_device
from datalaws.model.transformer import ModelConfig, count_params

__all__ = ["flops_per_token", "PEAK_BF16", "peak_flops"]

def flops_per_token(c: ModelConfig, *, causal_half: bool = False) -> float:
    """Training FLOPs per token: 6N (+ the output projection's 6*V*D) + attention."""
    _, nonembed = count_params(c)
    unembed = c.vocab * c.d_model  # the logits matmul runs whether or not weights are tied
    attn = 12 * c.n_layers * c.seq_len * c.d_model * (0.5 if causal_half else 1.0)
    return 6 * (nonembed + unembed) + attn


def peak_flops(device: jax.Device | None = None) -> float:
    """Dense bf16 peak of one device, from its ``device_kind``; an accelerator missing from
    the table is an error (CPU keeps a nominal peak for local runs)."""
    d = device or jax.devices()[0]
    return peak_for_device(d.device_kind, d.platform)
