"""What a compiled, partitioned program does per device, read from its optimized HLO text.

``hlo_stats(text, seq_len)`` walks the module's computations with their execution counts
(a while loop's body runs its known trip count times, e.g. the gradient-accumulation scan)
and sums: matmul FLOPs (``dot``, TPU ``convolution``, cuBLAS gemm calls, cuDNN fused attention),
collectives by kind with their bytes, and the batch dimension of the attention-score-sized
matmuls [B, H, T, T] (or of cuDNN's fused attention's queries [B, T, H, K]), which says
whether the batch is split in compute. XLA's ``cost_analysis`` counts a while body once
(the scanned layers, the accumulation loop), so this count is the one preflight reports.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict

import numpy as np

__all__ = ["hlo_stats", "COLLECTIVES"]

COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_SHAPE = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")
_HEADER = re.compile(r"^\s*(ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->\s*.*\{\s*$")
_CALLS = re.compile(r"\b(calls|body|condition|to_apply)=%?([\w.\-]+)")
_BRANCHES = re.compile(r"(?:branch_computations|called_computations)=\{([^}]*)\}")


def _shapes(text: str) -> list[tuple[str, tuple[int, ...]]]:
    return [(dt, tuple(int(d) for d in dims.split(",") if d))
            for dt, dims in _SHAPE.findall(text)]


def _nbytes(dt: str, dims: tuple[int, ...]) -> int:
    size = _BYTES.get(dt, 1 if dt.startswith("f8") else 0)
    return size * math.prod(dims)


def _split_type(rest: str) -> tuple[str, str]:
    """'bf16[2,3]{1,0} dot(...), attrs' -> (type text, 'dot(...), attrs')."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[: i + 1], rest[i + 1:].lstrip()
    head, _, tail = rest.partition(" ")
    return head, tail


def _parse(text: str):
    """{computation: [(name, type text, op, rest)]}, the entry's name."""
    comps, entry, cur = {}, None, None
    for line in text.splitlines():
        h = _HEADER.match(line)
        if h:
            cur = h.group(2)
            comps[cur] = []
            if h.group(1):
                entry = cur
            continue
        if cur is None or line.strip() == "}":
            continue
        m = _INSTR.match(line)
        if m:
            typ, rest = _split_type(m.group(2))
            op = rest.split("(", 1)[0].strip()
            comps[cur].append((m.group(1), typ, op, rest))
    return comps, entry


def _args(rest: str) -> list[str]:
    inside = re.sub(r"/\*.*?\*/", "", rest.split("(", 1)[1].split(")")[0])
    return [a.strip().lstrip("%") for a in inside.split(",")]


def _start(rest: str, loop_comp: list, index: int) -> int:
    """The counter's initial value: element ``index`` of the tuple the loop starts from
    (TPU's collective-matmul loops peel iterations and start past 0)."""
    by_name = {name: (op, r) for name, _, op, r in loop_comp}
    init = by_name.get(_args(rest)[0])
    if init and init[0] == "tuple":
        return _constant(_args(init[1])[index], by_name) or 0
    return 0


def _constant(name: str, by_name: dict) -> int | None:
    """The integer a scalar names, through the copies XLA places around loop constants."""
    first = by_name.get(name)
    while first and first[0] == "copy":
        first = by_name.get(_args(first[1])[0])
    m = first and first[0] == "constant" and re.search(r"constant\((\d+)\)", first[1])
    return int(m.group(1)) if m else None


def _step(rest: str, comps: dict, index: int) -> int:
    """How much the body adds to counter ``index`` per iteration: TPU's bidirectional
    collective-matmul loops do two ring steps per iteration (``i + 2``); 1 when unclear."""
    body = re.search(r"body=%?([\w.\-]+)", rest)
    instrs = comps.get(body.group(1), []) if body else []
    if not instrs or instrs[-1][2] != "tuple":  # the body's ROOT is its last instruction
        return 1
    by_name = {name: (op, r) for name, _, op, r in instrs}
    nxt = by_name.get(_args(instrs[-1][3])[index])
    if not nxt or nxt[0] != "add":
        return 1
    a, b = _args(nxt[1])[:2]
    for counter, inc in ((a, b), (b, a)):
        src = by_name.get(counter)
        if src and src[0] == "get-tuple-element" and f"index={index}" in src[1]:
            return _constant(inc, by_name) or 1
    return 1


def _trip_count(rest: str, comps: dict, caller: list) -> int | None:
    """A while loop's trip count: XLA's annotation (GPU, CPU), else from the bound its
    condition compares the counter with, the counter's start and its step (TPU: ``i <
    constant``; collective-matmul loops start past 0 and may step by 2)."""
    m = re.search(r'"known_trip_count"\s*:\s*\{\s*"n"\s*:\s*"?(\d+)', rest)
    if m:
        return int(m.group(1))
    cond = re.search(r"condition=%?([\w.\-]+)", rest)
    instrs = comps.get(cond.group(1), []) if cond else []
    consts = {name: re.search(r"constant\((\d+)\)", r) for name, typ, op, r in instrs
              if op == "constant" and re.match(r"[su]\d+\[\]", typ)}
    gte = {name: re.search(r"index=(\d+)", r) for name, _, op, r in instrs
           if op == "get-tuple-element"}
    for _, _, op, r in instrs:
        if op == "compare" and "direction=LT" in r:
            args = _args(r)
            if len(args) == 2 and consts.get(args[1]):
                index = gte.get(args[0])
                i = int(index.group(1)) if index else None
                start = _start(rest, caller, i) if i is not None else 0
                step = _step(rest, comps, i) if i is not None else 1
                return -(-(int(consts[args[1]].group(1)) - start) // step)
    return None


def _counts(comps: dict, entry: str) -> tuple[dict[str, float], bool]:
    """How many times each computation runs per step (and whether a trip count was unknown)."""
    count: dict[str, float] = defaultdict(float)
    count[entry] = 1.0
    unknown = False
    order = [entry]
    for comp in order:  # breadth-first over the call graph; HLO call graphs are acyclic
        for _, _, op, rest in comps.get(comp, []):
            trips = 1
            if op == "while":
                t = _trip_count(rest, comps, comps[comp])
                unknown |= t is None
                trips = t or 1
            callees = [(kind, c) for kind, c in _CALLS.findall(rest) if kind != "to_apply"]
            for group in _BRANCHES.findall(rest):
                callees += [("branch", c.strip().lstrip("%")) for c in group.split(",")]
            for kind, callee in callees:
                if callee not in comps:
                    continue
                count[callee] += count[comp] * (trips if kind in ("body", "condition") else 1)
                if callee not in order:
                    order.append(callee)
    return count, unknown


def _operands(rest: str, types: dict[str, str]) -> list[tuple[str, tuple[int, ...]]]:
    """Shapes of an instruction's operands, printed inline or looked up by name."""
    inside = rest.split("(", 1)[1].split(")", 1)[0] if "(" in rest else ""
    out = []
    for arg in inside.split(","):
        arg = arg.strip()
        shapes = _shapes(arg)
        if shapes:
            out.append(shapes[0])
        elif arg.lstrip("%") in types:
            out += _shapes(types[arg.lstrip("%")])[:1]
    return out


def _dot_flops(typ: str, rest: str, types: dict[str, str]) -> float:
    out = _shapes(typ)
    operands = _operands(rest, types)
    m = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", rest)
    if not out or not operands or not m:
        return 0.0
    lhs = operands[0][1]
    contract = math.prod(lhs[int(i)] for i in m.group(1).split(",") if i)
    return 2.0 * math.prod(out[0][1]) * contract


def _window(rest: str) -> dict[str, list[list[int]]]:
    m = re.search(r"window=\{([^}]*)\}", rest)
    out: dict[str, list[list[int]]] = {}
    for item in (m.group(1).split() if m else []):
        key, _, val = item.partition("=")
        out[key] = [[int(x) for x in part.split("_")] for part in val.split("x")]
    return out


def _pairs(n: int, k: int, m: int, stride: int, lo: int, dl: int, dr: int) -> int:
    """(output, kernel) position pairs of one spatial dimension that read a real input
    element (not padding, not a hole of lhs dilation)."""
    p = (np.arange(m)[:, None] * stride + np.arange(k)[None, :] * dr - lo)
    return int(((p >= 0) & (p <= (n - 1) * dl) & (p % dl == 0)).sum())


def _conv_flops(typ: str, rest: str, types: dict[str, str]) -> float:
    """TPU programs write (batched) matmuls as convolutions, batch dimensions as windows:
    2 * out batch * out features * kernel input features * per spatial dimension the
    (output, kernel) pairs that touch real input (padding and dilation holes excluded)."""
    out, ops = _shapes(typ), _operands(rest, types)
    m = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", rest)
    if not out or len(ops) < 2 or not m:
        return 0.0
    (lhs_l, ker_l, out_l), lhs, ker, res = m.groups(), ops[0][1], ops[1][1], out[0][1]
    if (len(lhs_l), len(ker_l), len(out_l)) != (len(lhs), len(ker), len(res)):
        return 0.0
    w = _window(rest)
    total = 2.0 * res[out_l.index("b")] * res[out_l.index("f")] * ker[ker_l.index("i")]
    for d in sorted(c for c in lhs_l if c.isdigit()):
        j = int(d)

        def attr(key, default, j=j):
            return w[key][j][0] if key in w else default

        lo = w["pad"][j][0] if "pad" in w else 0
        total *= _pairs(lhs[lhs_l.index(d)], ker[ker_l.index(d)], res[out_l.index(d)],
                        attr("stride", 1), lo, attr("lhs_dilate", 1), attr("rhs_dilate", 1))
    return total


def _gemm_flops(typ: str, rest: str, types: dict[str, str]) -> float:
    """cuBLAS gemm custom call: dimension numbers live in its backend_config."""
    m = re.search(r'"lhs_contracting_dimensions"\s*:\s*\[([^\]]*)\]', rest)
    operands = _operands(rest, types)
    out = _shapes(typ)
    if not m or not operands or not out:
        return 0.0
    lhs = operands[0][1]
    dims = [int(x) for x in json.loads("[" + m.group(1) + "]")]
    return 2.0 * math.prod(out[0][1]) * math.prod(lhs[d] for d in dims)


def _fmha_flops(target: str, rest: str, types: dict[str, str]) -> float:
    """cuDNN fused attention: 4*B*H*T*S*K forward (QK^T and PV), 2.5x that backward."""
    operands = _operands(rest, types)
    if len(operands) < 2:
        return 0.0
    q, k = operands[0][1], operands[1][1]  # [B, T, H, K] and [B, S, H, K]
    if len(q) != 4 or len(k) != 4:
        return 0.0
    fwd = 4.0 * q[0] * q[2] * q[1] * k[1] * q[3]
    return fwd * (2.5 if "backward" in target.lower() else 1.0)


def hlo_stats(text: str, seq_len: int) -> dict:
    """FLOPs, collectives {kind: {count, bytes}} and attention batch of one device's program."""
    comps, entry = _parse(text)
    count, unknown = _counts(comps, entry)
    types = {name: typ for instrs in comps.values() for name, typ, _, _ in instrs}
    flops = 0.0
    coll = {k: {"count": 0.0, "bytes": 0.0} for k in (*COLLECTIVES, "matmul-ring")}
    score_batches: set[int] = set()
    score_shapes: set[tuple[int, ...]] = set()
    for comp, instrs in comps.items():
        n = count.get(comp, 0.0)
        if not n:
            continue
        for _, typ, op, rest in instrs:
            if op == "dot":
                flops += n * _dot_flops(typ, rest, types)
            elif op == "convolution":
                flops += n * _conv_flops(typ, rest, types)
            if op in ("dot", "convolution"):  # attention scores [B, H, T, T] are matmuls
                out = _shapes(typ)
                if out and len(out[0][1]) >= 3 and out[0][1][-2] == out[0][1][-1] == seq_len:
                    score_shapes.add(out[0][1])  # a batch of one loses its axis: [H, T, T]
                    if len(out[0][1]) == 4:
                        score_batches.add(out[0][1][0])
            elif op == "custom-call":
                target = re.search(r'custom_call_target="([^"]+)"', rest)
                target = target.group(1) if target else ""
                if "gemm" in target or "matmul" in target:
                    flops += n * _gemm_flops(typ, rest, types)
                elif "fmha" in target or "cudnn$fmha" in target:
                    flops += n * _fmha_flops(target, rest, types)
                    q = _operands(rest, types)[:1]  # [B, T, H, K]
                    if q and len(q[0][1]) == 4:
                        score_batches.add(q[0][1][0])
            base = op[:-6] if op.endswith("-start") else op
            if base == "collective-permute" and "dot_general" in rest:
                base = "matmul-ring"  # XLA's collective matmul: a weight gather as a ring
            if base in coll and not op.endswith("-done"):
                shapes = _shapes(typ) + _operands(rest, types)
                coll[base]["count"] += n
                coll[base]["bytes"] += n * max((_nbytes(*s) for s in shapes), default=0)
    return {"flops": flops, "collectives": coll, "score_batches": sorted(score_batches),
            "score_shapes": sorted(score_shapes),
            "trip_count_unknown": unknown}
