"""Multiple-choice evaluation by log-likelihood scoring, as lm-evaluation-harness does it.

A task is a list of ``{"context": str, "choices": [str, ...], "label": int}``. Each choice is
scored by the summed log-probability of its tokens after the context; ``acc`` takes the
arg-max of that sum, ``acc_norm`` of the sum divided by the choice's length in bytes.

Loaders read the common layouts (JSONL): our own ``{context, choices, label}``, HellaSwag
(``ctx``, ``endings``, ``label``), ARC (``question``, ``choices: {text, label}``,
``answerKey``) and PIQA (``goal``, ``sol1``, ``sol2``, ``label``). ``builtin_tasks`` makes a
small task set from any documents, with no download: after four lines of a document, pick
its true next line among three other lines *of the same document* (chance 1/4). Distractors
from the same document share its vocabulary, style and indentation, so unigram statistics
do not give the answer away: a model must use the preceding lines, which small, briefly
trained models cannot (they score near chance) and larger ones learn. ``store_tasks`` builds
them from a store's validation documents, which no run trains on.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

__all__ = ["load_task", "builtin_tasks", "store_tasks", "evaluate_tasks", "chance"]

Item = dict  # {"context": str, "choices": list[str], "label": int}


def _convert(obj: dict, where: str) -> Item:
    if {"context", "choices", "label"} <= obj.keys():
        return {"context": obj["context"], "choices": list(obj["choices"]),
                "label": int(obj["label"])}
    if {"ctx", "endings", "label"} <= obj.keys():  # HellaSwag
        return {"context": obj["ctx"], "choices": [" " + e for e in obj["endings"]],
                "label": int(obj["label"])}
    if {"question", "choices", "answerKey"} <= obj.keys():  # ARC
        labels = list(obj["choices"]["label"])
        return {"context": f"Question: {obj['question']}\nAnswer:",
                "choices": [" " + t for t in obj["choices"]["text"]],
                "label": labels.index(obj["answerKey"])}
    if {"goal", "sol1", "sol2", "label"} <= obj.keys():  # PIQA
        return {"context": f"Question: {obj['goal']}\nAnswer:",
                "choices": [" " + obj["sol1"], " " + obj["sol2"]], "label": int(obj["label"])}
    raise ValueError(f"{where}: not a known multiple-choice layout (keys {sorted(obj)}); use "
                     "{context, choices, label} or HellaSwag / ARC / PIQA fields")


def load_task(path: str | Path) -> list[Item]:
    """Items of a JSONL task file in any supported layout (errors name the line)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such task file")
    items = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: invalid JSON ({e.msg})") from None
        item = _convert(obj, f"{path}:{i}")
        if not 0 <= item["label"] < len(item["choices"]):
            raise ValueError(f"{path}:{i}: label {item['label']} out of range")
        items.append(item)
    return items


def chance(items: Sequence[Item]) -> float:
    """Expected accuracy of guessing: the mean of 1 / number of choices."""
    return float(np.mean([1 / len(it["choices"]) for it in items]))


def builtin_tasks(corpus: dict[str, list[str]], *, n: int = 200, seed: int = 0
                  ) -> dict[str, list[Item]]:
    """Next-line tasks per domain: the true next line vs three other lines of its document,
    each at least three lines away from it."""
    rng = np.random.default_rng(seed)
    tasks = {}
    for domain, docs in corpus.items():
        lines = [list(dict.fromkeys(ln for ln in d.splitlines() if len(ln.strip()) > 20))
                 for d in docs]
        docs_ok = [i for i, ls in enumerate(lines) if len(ls) >= 10]
        if not docs_ok:
            continue
        items = []
        for _ in range(n):
            i = int(rng.choice(docs_ok))
            j = int(rng.integers(2, len(lines[i])))
            far = [k for k in range(len(lines[i])) if abs(k - j) >= 3]
            others = rng.choice(far, 3, replace=False)
            choices = [lines[i][j]] + [lines[i][int(k)] for k in others]
            order = rng.permutation(4)
            items.append({"context": "\n".join(lines[i][max(0, j - 4):j]) + "\n",
                          "choices": [choices[o] for o in order],
                          "label": int(np.flatnonzero(order == 0)[0])})
        tasks[f"nextline_{domain}"] = items
    return tasks


def store_tasks(store: str | Path, *, n: int = 100, seed: int = 0) -> dict[str, list[Item]]:
    """Built-in next-line tasks of a token store, from the validation documents of its base
    domains (those in its default evaluation composition); deterministic for a store."""
    from tokenizers import Tokenizer

    from datalaws.data.store import open_domain, store_validation

    tok = Tokenizer.from_file(str(Path(store) / "tokenizer.json"))
    validation = store_validation(store)
    corpus = {}
    for domain in validation["default_eval"]:
        tokens, meta = open_domain(store, domain)
        ids = np.asarray(tokens[validation["domains"][domain]["start"]:].read().result())
        ends = np.flatnonzero(ids == meta["eod"])
        docs = np.split(ids, ends + 1)
        corpus[domain] = [tok.decode(d[d != meta["eod"]].tolist()) for d in docs if len(d) > 1]
    return builtin_tasks(corpus, n=n, seed=seed)


def evaluate_tasks(model, tasks: dict[str, list[Item]], encode: Callable[[str], list[int]],
                   *, batch: int = 16) -> dict[str, float]:
    """{task: acc, task_norm: acc_norm} by summed log-likelihood of each choice."""
    T = model.c.seq_len
    graphdef, params = nnx.split(model)

    @jax.jit
    def logprob(params, x_BT, y_BT, m_BT):
        logits = nnx.merge(graphdef, params)(x_BT)
        return -jnp.sum(optax.softmax_cross_entropy_with_integer_labels(logits, y_BT) * m_BT, -1)

    out = {}
    for name, items in tasks.items():
        seqs, spans, owners = [], [], []
        for it_i, it in enumerate(items):
            ctx = encode(it["context"])
            for c in it["choices"]:
                cont = encode(c)
                full = (ctx + cont)[-(T + 1):]  # keep the end: the choice must be scored
                seqs.append(full)
                spans.append(min(len(cont), len(full) - 1))
                owners.append(it_i)
        scores = np.zeros(len(seqs))
        for b in range(0, len(seqs), batch):
            x = np.zeros((batch, T), np.int32)
            y = np.zeros((batch, T), np.int32)
            m = np.zeros((batch, T), np.float32)
            for j, (s, k) in enumerate(zip(seqs[b:b + batch], spans[b:b + batch])):
                L = len(s) - 1
                x[j, :L], y[j, :L] = s[:-1], s[1:]
                m[j, L - k:L] = 1.0  # only the choice's tokens count
            scores[b:b + batch] = np.asarray(logprob(params, x, y, m))[:len(seqs[b:b + batch])]
        acc = acc_norm = 0
        k = 0
        for it in items:
            n = len(it["choices"])
            s = scores[k:k + n]
            nbytes = np.array([max(1, len(c.encode())) for c in it["choices"]])
            acc += int(np.argmax(s) == it["label"])
            acc_norm += int(np.argmax(s / nbytes) == it["label"])
            k += n
        out[name] = acc / len(items)
        out[f"{name}_norm"] = acc_norm / len(items)
    return out
