"""datalaws.data: corpora -> token stores with measured quality, and the training loader.

Token stores (``store``): a tokenizer, domains of packed tokens with a fixed validation
split, diversity and syntheticity. New domains from old ones (``curate``): quality pools,
DSIR selection, synthesis from a ``Sampler``. The grain loader (``loader``) mixes domains
with repetition. Names load on first use (tensorstore and grain are heavy); this package
never imports ``datalaws.model``.
"""

import importlib

_EXPORTS = {
    "StoreError": "store", "add_syntheticity": "store", "domain_stats": "store",
    "embedded_corpus": "store", "open_domain": "store", "prepare_domain": "store",
    "store_validation": "store", "train_tokenizer": "store",
    "LoaderConfig": "loader", "make_loader": "loader", "markov_stream": "loader",
    "Sampler": "curate", "make_pools": "curate", "select_like": "curate",
    "synthesize": "curate",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
