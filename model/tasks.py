"""Multiple-choice evaluation by log-likelihood scoring, as lm-evaluation-harness does it.

A task is a list of ``{"context": str, "choices": [str, ...], "label": int}``. Each choice is
scored by the summed log-probability of its tokens after the context; ``acc`` takes the
arg-max of that sum, ``acc_norm`` of the sum divided by the choice's length in bytes.

Loaders read the common layouts (JSONL): our own ``{context, choices, label}``, HellaSwag
(``ctx``, ``endings``, ``label``), ARC (``question``, ``choices: {text, label}``,
``answerKey``) and PIQA (``goal``, ``sol1``, ``sol2``, ``label``).

``builtin_tasks`` makes a small task set from any documents, with no download: after
``CONTEXT`` (24) tokens of a document, pick its true continuation among four (chance 1/4).
All four choices are the same number of tokens, so the summed log-likelihood has no length
to prefer, and the distractors are spans of real text drawn at random positions like the
answer, so a model that ignores the context (unigram statistics) sits at chance. Difficulty
is graded in ``LEVELS`` so that models of different quality sit at different points of the
loss -> accuracy sigmoid: the next token against tokens of other domains (easy: the context's
domain already helps), the next 4 tokens against 4-token spans of other documents of the
same domain (medium), the next 8 tokens against 8-token spans of the same document (hard:
same vocabulary and topic; only the preceding tokens tell). On the demo's runs (86k-828k
parameters, 61k-184k tokens, validation loss 5.8 -> 4.3) the easy task goes from ~0.30 to
~0.68 and the hard one from ~0.22 to ~0.42. ``store_tasks`` builds them from a store's
validation documents, which no run trains on.
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

CONTEXT = 24  # tokens of context before the answer
# the built-in tasks, easy to hard: (name, tokens per choice, where the 3 distractors come from)
LEVELS = (("next1_xdomain", 1, "domain"),  # the next token vs tokens of other domains
          ("next4_xdoc", 4, "doc"),  # the next 4 tokens vs 4 tokens of other documents
          ("next8_samedoc", 8, "same"))  # the next 8 tokens vs 8 tokens of the same document


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


def _encoded(corpus: dict[str, list[str]], encode: Callable[[str], list[int]], need: int
             ) -> dict[str, list[np.ndarray]]:
    """Each domain's documents as token arrays, those long enough for an item."""
    out = {}
    for domain, docs in corpus.items():
        arrays = [np.asarray(encode(d), np.int64) for d in docs]
        arrays = [a for a in arrays if len(a) >= need]
        if arrays:
            out[domain] = arrays
    return out


def _distractor(rng, docs, domain: str, i: int, j: int, span: int, source: str):
    """A span of ``span`` tokens from where ``source`` says, or None if there is none."""
    if source == "same":  # the same document, away from the answer
        x = docs[domain][i]
        far = [k for k in range(len(x) - span + 1) if abs(k - j) >= 2 * span]
        return None if not far else x[(k := int(rng.choice(far))):k + span]
    if source == "doc":  # another document of the same domain
        pool = [k for k in range(len(docs[domain])) if k != i]
        if not pool:
            return None
        x = docs[domain][int(rng.choice(pool))]
    else:  # a document of another domain
        others = [d for d in docs if d != domain]
        x = docs[others[int(rng.integers(len(others)))]]
        x = x[int(rng.integers(len(x)))]
    k = int(rng.integers(len(x) - span + 1))
    return x[k:k + span]


def _item(rng, docs, domain: str, span: int, source: str, context: int, encode, decode):
    """One item, or None when its choices do not come out as distinct ``span``-token texts."""
    i = int(rng.integers(len(docs[domain])))
    x = docs[domain][i]
    j = int(rng.integers(context, len(x) - span + 1))
    spans = [x[j:j + span]] + [_distractor(rng, docs, domain, i, j, span, source)
                               for _ in range(3)]
    if any(s is None for s in spans):
        return None
    texts = [decode(s.tolist()) for s in spans]
    # equal token counts: a summed log-likelihood then has no length to prefer
    if len(set(texts)) < 4 or any(len(encode(t)) != span for t in texts):
        return None
    order = rng.permutation(4)
    return {"context": decode(x[j - context:j].tolist()),
            "choices": [texts[o] for o in order], "label": int(np.flatnonzero(order == 0)[0])}


def builtin_tasks(corpus: dict[str, list[str]], encode: Callable[[str], list[int]],
                  decode: Callable[[list[int]], str], *, n: int = 300, seed: int = 0,
                  context: int = CONTEXT) -> dict[str, list[Item]]:
    """The ``LEVELS`` continuation tasks over the documents of ``corpus`` (domain -> texts),
    ``n`` items each, drawn in turn from each domain; a level without the documents it needs
    (``xdomain`` with one domain) is left out. Deterministic for a corpus and seed."""
    rng = np.random.default_rng(seed)
    longest = max(span for _, span, _ in LEVELS)
    docs = _encoded(corpus, encode, context + 5 * longest)
    tasks = {}
    for name, span, source in LEVELS:
        if not docs or (source == "domain" and len(docs) < 2):
            continue
        domains, items = sorted(docs), []
        for attempt in range(50 * n):  # domains in turn; one that cannot serve is skipped
            if len(items) == n:
                break
            item = _item(rng, docs, domains[attempt % len(domains)], span, source, context,
                         encode, decode)
            if item is not None:
                items.append(item)
        if items:
            tasks[name] = items
    return tasks


def store_tasks(store: str | Path, *, n: int = 300, seed: int = 0) -> dict[str, list[Item]]:
    """Built-in continuation tasks of a token store, from the validation documents of its base
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
    return builtin_tasks(corpus, lambda t: tok.encode(t).ids, tok.decode, n=n, seed=seed)


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
