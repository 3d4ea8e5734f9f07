"""Training throughput: tokens/s and MFU per preset and sequence length, and on CPU the ratio
to the same architecture and batch in PyTorch (torch==2.13.0 CPU wheel), timed in this run.

    python bench/train_throughput.py                  # CPU: tiny presets, datalaws vs PyTorch
    python bench/train_throughput.py --gpu            # GPU(s): 350m and 1.5b @2048, MFU

Timing excludes compilation (first steps) and waits for the device (block_until_ready).
"""

import argparse
import time

import jax
import numpy as np
from jax.sharding import NamedSharding

from datalaws.model.flops import flops_per_token, peak_flops
from datalaws.model.sharding import batch_spec
from datalaws.model.train import TrainConfig, init_state, make_mesh, make_train_step
from datalaws.model.transformer import ModelConfig


def datalaws_tokens_per_s(mc: ModelConfig, batch: int, steps: int) -> tuple[float, str]:
    """Tokens/s, and on an accelerator the compiler's per-device memory estimate (what
    ``datalaws preflight`` reports) beside the device's measured peak."""
    c = TrainConfig(model=mc, tokens=batch * mc.seq_len * (steps + 10), batch=batch)
    mesh = make_mesh(None)  # fsdp over every device, as training does by default
    graphdef, state, sh = init_state(c, mesh)
    step = make_train_step(graphdef, sh, mesh, 1)
    rng = np.random.default_rng(0)
    # placed as training places a batch: split over data x fsdp (every GPU its own rows)
    split = NamedSharding(mesh, batch_spec(mesh, batch))
    b = {k: jax.device_put(rng.integers(0, mc.vocab, (batch, mc.seq_len)).astype(np.int32),
                           split) for k in ("inputs", "targets", "positions")}
    for _ in range(3):
        state, m = step(state, b)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, b)
    jax.block_until_ready(m)
    tps = batch * mc.seq_len * steps / (time.perf_counter() - t0)
    stats = jax.devices()[0].memory_stats()  # None on CPU
    if not stats:
        return tps, ""
    est = step.lower(state, b).compile().memory_analysis()
    est_peak = (est.argument_size_in_bytes + est.temp_size_in_bytes
                + est.output_size_in_bytes - est.alias_size_in_bytes)
    return tps, (f"  memory: compiler {est_peak / 2**30:.1f} GiB, measured peak "
                 f"{stats['peak_bytes_in_use'] / 2**30:.1f} GiB (process so far)")


def torch_tokens_per_s(mc: ModelConfig, batch: int, steps: int) -> float:
    import torch
    from torch import nn

    torch.manual_seed(0)
    D, H, F, T = mc.d_model, mc.n_heads, mc.d_ff, mc.seq_len
    K = D // H

    def rope(x):
        half = K // 2
        freq = mc.rope_base ** (-torch.arange(half) / half)
        ang = torch.arange(T)[:, None] * freq[None]
        sin, cos = ang.sin()[None, :, None], ang.cos()[None, :, None]
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.RMSNorm(D, eps=1e-6), nn.RMSNorm(D, eps=1e-6)
            self.qkv = nn.Linear(D, 3 * D, bias=False)
            self.out = nn.Linear(D, D, bias=False)
            self.gate_up = nn.Linear(D, 2 * F, bias=False)
            self.down = nn.Linear(F, D, bias=False)

        def forward(self, x):
            B = x.shape[0]
            q, k, v = self.qkv(self.n1(x)).view(B, T, 3, H, K).unbind(2)
            q, k = rope(q), rope(k)
            a = nn.functional.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
            x = x + self.out(a.transpose(1, 2).reshape(B, T, D))
            g, u = self.gate_up(self.n2(x)).chunk(2, -1)
            return x + self.down(nn.functional.silu(g) * u)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(mc.vocab, D)
            self.blocks = nn.ModuleList([Block() for _ in range(mc.n_layers)])
            self.norm = nn.RMSNorm(D, eps=1e-6)
            self.head = nn.Linear(D, mc.vocab, bias=False)

        def forward(self, t):
            x = self.emb(t)
            for b in self.blocks:
                x = b(x)
            return self.head(self.norm(x))

    model = LM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randint(0, mc.vocab, (batch, T))
    y = torch.randint(0, mc.vocab, (batch, T))

    def step():
        # float32 on both sides on CPU: bf16 matmuls are emulated (slowly) on most CPUs
        logits = model(x)
        loss = nn.functional.cross_entropy(logits.float().view(-1, mc.vocab), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * T * steps / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    if a.gpu:  # per-device batch 4 x 2048 tokens; 1.5b saves matmul outputs only
        n = jax.device_count()
        cases = [("350m", 2048, 4 * n), ("1.5b", 2048, 4 * n)]
    else:
        cases = [("micro", 128, 16), ("mini", 128, 16), ("25m", 256, 4)]
    peak = peak_flops() * jax.device_count()
    print(f"device: {jax.devices()[0].device_kind} x{jax.device_count()}", flush=True)
    for preset, T, batch in cases:
        mc = ModelConfig.preset(preset, vocab=32768 if a.gpu else 8192, seq_len=T,
                                dtype="bfloat16" if a.gpu else "float32",
                                remat="dots" if preset == "1.5b" else False)
        tps, memory = datalaws_tokens_per_s(mc, batch, a.steps)
        mfu = tps * flops_per_token(mc) / peak
        line = f"{preset:>6} T={T:<5} B={batch:<3} datalaws {tps:10,.0f} tok/s  MFU {mfu:6.1%}"
        if not a.gpu:
            ref = torch_tokens_per_s(mc, batch, max(5, a.steps // 2))
            line += f"  PyTorch {ref:10,.0f} tok/s  ratio datalaws/PyTorch {tps / ref:5.2f}"
        print(line + memory, flush=True)


if __name__ == "__main__":
    main()
