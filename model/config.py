"""One run's configuration: a tree of frozen dataclasses built one way from TOML, a dict
(what sweeps write) or `datalaws train` flags, and written back with ``to_dict``.

``RunConfig`` holds the training piece (``TrainConfig``: the model, the optimizer and its
schedule, the mixture, repetitions, evaluation cadence, checkpoint cadence, mesh) beside
what a run reads and writes: its data (store and tasks), output folder and logging. Every
number derived from a run (steps, tokens trained, FLOPs per token, total FLOPs) is a
property of this object; `sweep plan`, `train` and the run record all read them here.

The module lives in ``datalaws.model`` because its pieces do (ModelConfig, TrainConfig,
the FLOP count), and every user (train, sweeps, the demo) imports jax already.

A config may be flat (the historical keys: preset, tokens, data, mixture, lr, ...) or
grouped into the tables ``to_dict`` writes: [model], [optimizer], [data], [evaluation],
[checkpoint], [logging]. The vocabulary is the store's tokenizer's; a ``vocab`` key must
agree with it (a store not built yet: ``vocab`` says it, for planning).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path

from datalaws.model.train import TrainConfig
from datalaws.model.transformer import PRESETS, ModelConfig
from datalaws.records import parse_mixture

__all__ = ["RunConfig", "DataConfig", "LoggingConfig", "ConfigError", "store_vocab", "SECTIONS"]


class ConfigError(ValueError):
    """A bad run config; the message has one line per bad field."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig:
    """Where the tokens come from (the mixture and repetitions are in ``TrainConfig``)."""

    store: str  # token store from `datalaws data prepare`
    tasks: tuple[str, ...] = ()  # multiple-choice JSONL files (default: the store's own)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoggingConfig:
    profile_steps: tuple[int, int] | None = None  # JAX profiler trace of these steps
    wandb: bool = False  # also log to Weights & Biases (offline)


# key -> the table `to_dict` writes it in; absent keys sit at the top level
SECTIONS: dict[str, tuple[str, ...]] = {
    "model": ("preset", "vocab", "seq_len", "attention", "dtype", "remat", "tied",
              "rope_base", "scan_layers"),
    "optimizer": ("lr", "batch", "grad_accum", "schedule", "warmup_frac", "decay_frac",
                  "min_lr_frac", "z_loss", "weight_decay", "clip"),
    "data": ("data", "mixture", "unique_tokens", "pool", "loader_workers"),
    "evaluation": ("eval_mix", "eval_every", "eval_windows", "curve_windows", "tasks"),
    "checkpoint": ("out", "save_every", "keep"),
    "logging": ("log_every", "profile_steps", "wandb"),
}
_TOP = ("tokens", "seed", "run_id", "mesh")
_MODEL_KEYS = SECTIONS["model"][1:]  # ModelConfig fields a config may set (not the shape)
_TRAIN_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "model")
_KNOWN = frozenset(k for keys in SECTIONS.values() for k in keys) | frozenset(_TOP)
# positive numbers (int: whole); checked before any object is built
_POSITIVE = {"tokens": float, "batch": int, "seq_len": int, "lr": float, "save_every": int,
             "grad_accum": int, "unique_tokens": float, "log_every": int, "keep": int,
             "eval_windows": int, "curve_windows": int, "vocab": int}
# defaults of `datalaws train` where they differ from the dataclasses' (small local runs)
_DEFAULTS = {"seq_len": 128, "save_every": 50}
_FRACTIONS = ("warmup_frac", "decay_frac", "min_lr_frac")
_NONNEGATIVE = ("z_loss", "weight_decay", "clip", "eval_every", "loader_workers")


@functools.lru_cache(maxsize=64)
def store_vocab(store: str) -> int | None:
    """The vocabulary of the store's tokenizer, None when the store has none (yet)."""
    path = Path(store) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path)).get_vocab_size()


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """One training run: everything `datalaws train` needs, nothing read from elsewhere."""

    preset: str
    train: TrainConfig
    data: DataConfig
    out: str
    logging: LoggingConfig = LoggingConfig()

    # -- derived numbers: the one place sweeps, train and the record read them --------
    @property
    def model(self) -> ModelConfig:
        return self.train.model

    @property
    def steps(self) -> int:
        return self.train.steps

    @property
    def tokens_per_step(self) -> int:
        return self.train.batch * self.model.seq_len

    @property
    def trained_tokens(self) -> int:
        """Tokens the run trains on: whole steps of the budget."""
        return self.steps * self.tokens_per_step

    @property
    def flops_per_token(self) -> float:
        from datalaws.model.flops import flops_per_token

        return flops_per_token(self.model)

    @property
    def flops(self) -> float:
        """Training FLOPs of the whole run (the record's ``flops`` when it finishes)."""
        return self.flops_per_token * self.trained_tokens

    # -- construction ---------------------------------------------------------------
    @classmethod
    def from_dict(cls, cfg: Mapping, *, need_store: bool = True) -> RunConfig:
        """From flat keys or ``to_dict``'s tables. ``need_store=False`` (planning): a store
        without a tokenizer yet takes ``vocab`` from the config (else the model default)."""
        flat = _DEFAULTS | {k: v for k, v in _flatten(cfg).items() if v is not None}
        errors = _check(flat)
        vocab = _vocab(flat, need_store, errors)
        if errors:
            raise ConfigError("\n".join(errors))
        try:
            model = ModelConfig.preset(flat["preset"], vocab=vocab, **{
                k: _remat(flat[k]) if k == "remat" else flat[k]
                for k in _MODEL_KEYS if k in flat and k != "vocab" and flat[k] is not None})
            train = TrainConfig(model=model, **_train_kwargs(flat))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"train config: {e}") from None
        tasks = flat.get("tasks") or ()
        return cls(preset=flat["preset"], train=train,
                   data=DataConfig(store=str(flat["data"]),
                                   tasks=(tasks,) if isinstance(tasks, str) else tuple(tasks)),
                   out=str(flat["out"]), logging=_logging(flat))

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> RunConfig:
        """A TOML file; ``overrides`` (flag values, None: unset) win over it."""
        try:
            with open(path, "rb") as f:
                cfg = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: invalid TOML ({e})") from None
        return cls.from_dict(_flatten(cfg) | {k: v for k, v in overrides.items()
                                              if v is not None})

    @classmethod
    def from_args(cls, a) -> RunConfig:
        """`datalaws train` flags (an argparse namespace): TOML file, JSON, then flags."""
        return cls.from_dict(args_to_dict(a))

    def to_dict(self) -> dict:
        """The config as tables of plain values; ``from_dict`` reads it back equal."""
        t, m = self.train, self.model
        flat = {k: getattr(t, k) for k in _TRAIN_KEYS} | {k: getattr(m, k) for k in _MODEL_KEYS}
        flat |= {"preset": self.preset, "data": self.data.store, "tasks": list(self.data.tasks),
                 "out": self.out, "mixture": dict(t.mixture), "wandb": self.logging.wandb,
                 "eval_mix": None if t.eval_mix is None else dict(t.eval_mix),
                 "mesh": None if t.mesh is None else list(t.mesh),
                 "profile_steps": (None if self.logging.profile_steps is None else
                                   "{}:{}".format(*self.logging.profile_steps))}
        out = {k: flat[k] for k in _TOP}
        for section, keys in SECTIONS.items():
            out[section] = {k: flat[k] for k in keys}
        return out


def args_to_dict(a) -> dict:
    """`datalaws train`'s namespace -> one flat config: TOML file < --config-json < flags."""
    import json

    cfg: dict = {}
    if getattr(a, "config", None):
        try:
            with open(a.config, "rb") as f:
                cfg = _flatten(tomllib.load(f))
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{a.config}: invalid TOML ({e})") from None
    if getattr(a, "config_json", None):
        try:
            cfg |= _flatten(json.loads(a.config_json))
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config-json: invalid JSON ({e})") from None
    for key in sorted(_KNOWN):  # a flag given (store_true flags: only when set) wins
        v = getattr(a, key, None)
        if v is not None and v is not False:
            cfg[key] = v
    return cfg


def _flatten(cfg: Mapping) -> dict:
    """Tables ([model], [optimizer], ...) merged into one flat dict; [data] store -> data."""
    flat: dict = {}
    for k, v in cfg.items():
        if k in SECTIONS and isinstance(v, Mapping):
            flat |= {("data" if (k, kk) == ("data", "store") else kk): vv for kk, vv in v.items()}
        else:
            flat[k] = v
    return flat


def _check(flat: dict) -> list[str]:
    """One line per bad field: unknown keys, missing keys, numbers, preset, compositions."""
    errors = []
    for k in sorted(set(flat) - _KNOWN):
        near = difflib.get_close_matches(k, sorted(_KNOWN), n=1)
        errors.append(f"{k}: unknown setting" + (f" (did you mean {near[0]}?)" if near else ""))
    for k in ("preset", "tokens", "data", "out", "mixture"):
        if flat.get(k) in (None, "", {}):
            errors.append(f"{k}: missing" + (" (domain=proportion,...)" if k == "mixture"
                                             else ""))
    if flat.get("preset") not in (None, "") and flat["preset"] not in PRESETS:
        errors.append(f"preset = {flat['preset']!r}: unknown; presets are {', '.join(PRESETS)}")
    for k, v in flat.items():
        if v is not None and (k in _POSITIVE or k in _FRACTIONS or k in _NONNEGATIVE):
            errors += _number_error(k, v)
    if flat.get("seed") is not None and not (str(flat["seed"]).isdigit()
                                             and int(flat["seed"]) < 2 ** 32):
        errors.append(f"seed = {flat['seed']!r}: must be a whole number in [0, 2**32)")
    if flat.get("run_id") is not None:
        from datalaws.records import run_id_error

        if (why := run_id_error(str(flat["run_id"]))) is not None:
            errors.append(why)
    from datalaws.model.metrics import parse_profile_steps

    try:
        parse_profile_steps(flat.get("profile_steps"))
    except ValueError as e:
        errors.append(str(e).replace("--profile-steps", "profile_steps =", 1))
    for k in ("mixture", "eval_mix"):
        if flat.get(k) not in (None, "", {}):
            try:
                flat[k] = _composition(flat[k], k)
            except ValueError as e:
                errors.append(str(e))
    return errors


def _number_error(k: str, v) -> list[str]:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return [f"{k} = {v!r}: not a number"]
    if k in _FRACTIONS:
        ok, what = math.isfinite(x) and 0 <= x <= 1, "a number in [0, 1]"
    elif k in _NONNEGATIVE:
        ok, what = math.isfinite(x) and x >= 0, "a number >= 0"
    else:
        whole = _POSITIVE[k] is int
        ok = math.isfinite(x) and x > 0 and (not whole or x == int(x))
        what = f"a positive {'whole number' if whole else 'number'}"
    return [] if ok else [f"{k} = {v!r}: must be {what}"]


def _composition(mix, key: str) -> dict[str, float]:
    """A mixture or evaluation composition, normalised to sum to 1 (sorted by domain)."""
    if isinstance(mix, str):
        return parse_mixture(mix)
    if not isinstance(mix, Mapping):
        raise ValueError(f"{key} = {mix!r}: write domain=proportion,... or a table")
    for d, v in mix.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or v < 0:
            raise ValueError(f"{key} {d} = {v!r}: proportions are numbers >= 0")
    total = sum(float(v) for v in mix.values())
    if total <= 0:
        raise ValueError(f"{key} = {dict(mix)}: proportions need a positive sum")
    # already normalised (a config written by to_dict): keep it bit for bit
    scale = 1.0 if math.isclose(total, 1.0, rel_tol=1e-12) else total
    return {d: float(mix[d]) / scale for d in sorted(mix)}


def _vocab(flat: dict, need_store: bool, errors: list[str]) -> int:
    """The store tokenizer's vocabulary; a ``vocab`` key must agree with it."""
    if flat.get("data") in (None, ""):
        return 1  # reported as missing already
    store = str(flat["data"])
    given = flat.get("vocab")
    have = store_vocab(store)
    if have is None:
        if need_store:
            errors.append(f"data = {store}: not a token store (no tokenizer.json); make one "
                          "with `datalaws data prepare`")
        return int(float(given)) if given is not None and not _number_error("vocab", given) \
            else ModelConfig.vocab
    if given is not None and not _number_error("vocab", given) and int(float(given)) != have:
        errors.append(f"vocab = {given}: the store {store} has a {have}-token tokenizer")
    return have


def _train_kwargs(flat: dict) -> dict:
    from datalaws.model.sharding import parse_mesh  # jax loads with the model anyway

    kinds = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    out = {}
    for k in _TRAIN_KEYS:
        v = flat.get(k)
        if v is None or k in ("mixture", "eval_mix", "mesh"):
            continue
        kind = kinds[k]
        out[k] = (int(float(v)) if kind in ("int", "int | None") else
                  float(v) if kind == "float" else str(v))
    out["mixture"] = flat["mixture"]
    out["eval_mix"] = flat.get("eval_mix") or None
    out["mesh"] = parse_mesh(flat.get("mesh"))
    return out


def _logging(flat: dict) -> LoggingConfig:
    from datalaws.model.metrics import parse_profile_steps

    return LoggingConfig(profile_steps=parse_profile_steps(flat.get("profile_steps")),
                         wandb=bool(flat.get("wandb")))


def _remat(v) -> bool | str:
    return {"none": False, "false": False, "true": True}.get(str(v).lower(), v)
