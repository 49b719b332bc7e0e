"""Named training runs: the ``train`` config, the arms, and their resolution from params.

A *run* is everything one training run reads: the ``train`` section
(:class:`TrainConfig`), the model section of its kind (``descriptor`` or ``matcher``,
owned by :mod:`icdlib.models`), the ``pairs`` section (:mod:`icdlib.data.pairs`) and the
``edits`` section (:class:`icdlib.edits.EditConfig`, the edit chains of the query). An
*arm* is a named set of overrides of those sections, nested
(``{"train": {"w_copynce": 5.0}, "pairs": {"targets": "uniform"}}``) or dotted
(``{"train.w_copynce": 5.0}``), applied to params before the configs are built. Arms are
defined in one place only: the ``arms`` section of params.yaml.

Precedence, lowest first: the sections of params.yaml, then the arm, then explicit
overrides (``--set``, the pipeline's seed and step counts). An arm's key therefore wins
over the same key of its section: ``dvc exp run -S train.steps=900`` changes every arm
that does not set ``train.steps`` itself, and ``-S arms.matcher_bce.train.steps=900``
changes that arm. :attr:`RunConfig.shadowed` lists the section values an arm replaced,
and ``python -m icdlib.train`` prints them.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from icdlib.data import pairs_config
from icdlib.edits import EditConfig
from icdlib.models import CONFIGS
from icdlib.params import has_key, lookup, section, to_dict


# The released recipe's base learning rates (method.md s.5): the peak lr of a run is
# ``base * sqrt(items per optimiser step / 1024)``. A descriptor item is one source image (it brings its
# kNN look-alike's pair too: two pairs, one item); a matcher item is one pair.
RELEASED_BASE_LR = {"descriptor": 6e-4, "matcher": 1e-3}
RULE_BATCH = 1024  # the batch the base lr is quoted at


def recipe_lr(base_lr: float, items_per_step: int) -> float:
    """The released rule: ``base_lr * sqrt(items_per_step / 1024)``.

    ``items_per_step`` is the global batch of one optimiser step (every process and micro-step
    together). Examples: the released descriptor, 6e-4 at 768 items, gives 5.2e-4; 6e-4 at our 32
    items gives 1.06e-4; the matcher's 1e-3 at 32 pairs gives 1.77e-4.
    """
    if not base_lr > 0 or int(items_per_step) < 1:
        raise ValueError(f"recipe_lr: need base_lr > 0 and items_per_step >= 1, got {base_lr}, {items_per_step}")
    return float(base_lr) * math.sqrt(int(items_per_step) / RULE_BATCH)


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml section ``train`` (method.md s.5 and s.8).

    Defaults equal params.yaml's default profile (tests/test_defaults.py checks it), which
    are the released fine-tuning recipe's values. A run from random init (the trunk) sets
    its own measured values in its arm.
    """

    kind: str = "descriptor"  # "descriptor" | "matcher": which model this run trains
    steps: int = 300  # optimiser steps (the default profile's descriptor arms fine-tune a trunk)
    # global items per step, all processes and micro-steps together (an item with a kNN look-alike is two pairs)
    batch_size: int = 32
    lr: float | None = None  # peak AdamW lr set explicitly; null: the released rule from base_lr (peak_lr)
    base_lr: float | None = None  # the rule's base; null: the release's for the kind (descriptor 6e-4, matcher 1e-3)
    head_lr_scale: float = 1.0  # lr of what the start trunk lacks (projection, fusion token, head) relative to lr
    weight_decay: float = 0.04  # released configs
    wd_exempt_tokens: bool = True  # no decay on position embeddings, class/fusion tokens (released: no_weight_decay)
    warmup_steps: int | None = None  # explicit warm-up steps; null: warmup_fraction of the steps (warmup)
    warmup_fraction: float = 0.0333333  # released: one epoch of 30 (1/30)
    warmup_start: float = 0.01  # warm-up starts at 1% of lr, as the released configs
    min_lr: float = 2e-6  # cosine floor of the released configs
    grad_clip: float = 3.0  # max global grad norm, released configs; 0 disables
    grad_accum: int = 1  # micro-steps per optimiser step (in-batch negatives per micro-batch)
    amp: bool = True  # bf16 autocast on CUDA (CopyNCE itself stays fp32)
    amp_cpu: bool = True  # bf16 autocast on CPU too, only where it pays (models.precision)
    workers: int = 1  # DataLoader processes per rank (edits + tracing); on 2 cores the other one trains
    checkpoint_every: int = 50  # steps between resumable checkpoints (~1 min on CPU)
    seed: int = 0  # data order, edits, init; stochastic layers draw from (seed, step, rank)
    w_infonce: float = 1.0  # descriptor InfoNCE weight (method.md s.4)
    w_koleo: float = 5.0  # descriptor KoLeo weight (method.md s.4)
    w_copynce: float = 0.0  # CopyNCE weight; 0 = baseline, arms set 5 / 3 (s.3)
    w_bce: float = 1.0  # matcher BCE weight (s.4)
    temperature: float | None = None  # fixed InfoNCE temperature; null = learnable scale from log_scale_init (released)
    log_scale_init: float = 3.2  # released InfoNCE log-scale start (exp 3.2 = 24.5)
    bn_per_side: bool = True  # descriptor head BatchNorm: queries and references in separate calls (released)
    gamma: float = 3.0  # CopyNCE target sharpening: 3 descriptor, 1 matcher (s.3)
    lam: float = 0.5  # CopyNCE weight of the query->reference direction (s.3)
    scale: float = 16.0  # CopyNCE logit scale tau (s.3)
    heads: str | None = None  # CopyNCE channels kept, "a:b"; null = all (released "6:6")
    copynce_over: str = "all"  # matcher CopyNCE mean over "all" pairs (released) or traceable "positives"
    knn_checkpoint: str | None = None  # descriptor checkpoint to mine kNN hard negatives with
    knn_k: int = 16  # neighbours kept per image (paper 128 over 1M images; ours ~20k)
    knn_batch_size: int = 128  # images per forward pass while mining
    knn_cache: str | None = None  # folder of mined kNN tables shared by runs; null = the run folder
    # folder of traced pairs computed once and shared by runs of the same data; null = pairs made on the fly
    pair_cache: str | None = None
    init: str | None = None  # checkpoint to start from (weights only): fine-tuning
    backbone: str | None = None  # local DINO ViT checkpoint for the trunk; null = random init
    split: str = "training"  # data split the pairs come from
    log_every: int = 1  # steps between DVCLive metric rows
    # steps whose weights are also kept, as OUT/model_step<N>.pt (learning curves); those >= steps are ignored
    snapshots: tuple[int, ...] = (75, 150, 225)

    def __post_init__(self):
        if self.kind not in ("descriptor", "matcher"):
            raise ValueError(f"train.kind must be 'descriptor' or 'matcher', got {self.kind!r}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every", "knn_k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"train.workers must be >= 0, got {self.workers}")
        for name in ("lr", "base_lr"):
            value = getattr(self, name)
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"train.{name} must be a finite number > 0 (or null), got {value}")
        if not 0 <= self.warmup_fraction < 1:
            raise ValueError(f"train.warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        if not 0 <= self.warmup < self.steps:
            raise ValueError(
                f"train.warmup_steps must be in [0, steps={self.steps}), got {self.warmup}"
            )
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )
        if any(int(n) < 1 for n in self.snapshots):
            raise ValueError(f"train.snapshots must be steps >= 1, got {list(self.snapshots)}")
        if self.grad_clip < 0:
            raise ValueError(f"train.grad_clip must be >= 0, got {self.grad_clip}")
        if not self.head_lr_scale > 0:
            raise ValueError(f"train.head_lr_scale must be > 0, got {self.head_lr_scale}")
        if self.copynce_over not in ("all", "positives"):
            raise ValueError(f"train.copynce_over must be 'all' or 'positives', got {self.copynce_over!r}")
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"train.temperature must be > 0 (or null: learnable), got {self.temperature}")

    @property
    def warmup(self) -> int:
        """Warm-up steps: ``warmup_steps`` when set, else ``round(warmup_fraction * steps)``."""
        if self.warmup_steps is not None:
            return int(self.warmup_steps)
        return int(round(self.warmup_fraction * self.steps))

    @property
    def rule_base_lr(self) -> float:
        """The base of the released rule: ``base_lr``, or the release's value for ``kind``."""
        return float(self.base_lr) if self.base_lr is not None else RELEASED_BASE_LR[self.kind]

    @property
    def peak_lr(self) -> float:
        """The peak lr the schedule reaches: ``lr`` when set, else :func:`recipe_lr` of the global batch."""
        if self.lr is not None:
            return float(self.lr)
        return recipe_lr(self.rule_base_lr, self.batch_size)

    def lr_source(self) -> str:
        """One line saying which lr applies and why (``python -m icdlib.train`` prints it)."""
        if self.lr is not None:
            return f"peak lr {self.peak_lr:.3g}: train.lr, set explicitly"
        unit = "items" if self.kind == "descriptor" else "pairs"
        origin = "train.base_lr" if self.base_lr is not None else f"the release's {self.kind} base"
        return (f"peak lr {self.peak_lr:.3g}: the released rule, base {self.rule_base_lr:g} ({origin}) "
                f"x sqrt({self.batch_size} {unit} per step / {RULE_BATCH})")


@dataclass(frozen=True)
class RunConfig:
    """Everything one run reads: ``train``, the ``model`` config of ``train.kind``, ``pairs``.

    ``overrides`` records the dotted ``(key, value)`` overrides applied (arm, then --set).
    """

    arm: str
    train: TrainConfig
    model: Any
    pairs: Any
    overrides: tuple = ()
    edits: Any = None  # EditConfig of the params' edits section; None: the edit library's defaults
    shadowed: tuple = ()  # (key, section value, arm value) for every section value the arm replaced

    def to_dict(self) -> dict:
        return {"arm": self.arm, "train": to_dict(self.train), "model": to_dict(self.model),
                "pairs": to_dict(self.pairs), "edits": to_dict(self.edits) if self.edits is not None else None,
                "overrides": [list(o) for o in self.overrides]}


def parse_sets(sets: Sequence[str]) -> list[tuple[str, Any]]:
    """``["train.steps=10", "pairs.targets=uniform"]`` -> dotted pairs, values as YAML."""
    out = []
    for item in sets:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else ""
        except yaml.YAMLError as e:
            raise ValueError(f"--set {item!r}: the value is not valid YAML ({e})") from None
        out.append((key.strip(), value))
    return out


# the params sections a run reads: an override of any other section would be ignored
RUN_SECTIONS = ("train", "pairs", "descriptor", "matcher")


def apply_overrides(params: dict, overrides: Sequence[tuple[str, Any]]) -> dict:
    """Write dotted ``section.key`` overrides into a copy of ``params``.

    The section must be one a run reads (:data:`RUN_SECTIONS`), else ``ValueError``
    naming it; it may be missing from ``params`` (it is created). Whether the key exists
    and its value's type are checked when the section's dataclass is built, which names
    any unknown key or wrong value.
    """
    out = copy.deepcopy(params)
    for key, value in overrides:
        parts = key.split(".")
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"override {key!r}: expected section.key")
        if parts[0] not in RUN_SECTIONS:
            raise ValueError(
                f"override {key!r}: unknown section {parts[0]!r}; a run reads the sections "
                f"{', '.join(RUN_SECTIONS)}"
            )
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {key!r}: {p!r} is not a section")
        node[parts[-1]] = value
    return out


def resolve_run(params: dict, arm: str | None = None, sets: Sequence[str] | dict = (),
                source: str = "params.yaml") -> RunConfig:
    """Resolve a params dict, an arm name and overrides into a :class:`RunConfig`.

    Args:
        params: parsed params.yaml (sections ``train``, ``pairs``, the model's; ``arms``
            mapping name -> {dotted key: value}, the only definition of the arms; a
            top-level ``seed`` is the default of ``train.seed``).
        arm: name of an arm of ``params["arms"]``, or None (params as they are).
        sets: ``["train.steps=10"]`` strings or a ``{"train.steps": 10}`` dict, applied
            after the arm.
    """
    overrides: list[tuple[str, Any]] = []
    if "seed" in params and "seed" not in (params.get("train") or {}):
        overrides.append(("train.seed", int(params["seed"])))  # the file's global seed
    if arm:
        arms = arm_names(params, source)
        if arm not in arms:
            known = ", ".join(arms) if arms else f"none: {source} has no arms section"
            raise ValueError(f"{source}: unknown arm {arm!r}; known arms: {known}")
        spec = params["arms"][arm] or {}
        if not isinstance(spec, dict):
            raise ValueError(f"{source}:arms.{arm}: expected a mapping of (dotted) keys, got {spec!r}")
        arm_keys = flatten_overrides(spec, f"{source}:arms.{arm}")
        shadowed = tuple((k, lookup(params, k), v) for k, v in arm_keys
                         if has_key(params, k) and lookup(params, k) != v)
        overrides += arm_keys
    else:
        shadowed = ()
    overrides += list(sets.items()) if isinstance(sets, dict) else parse_sets(sets)
    raw = apply_overrides(params, overrides)
    tcfg = section(raw, "train", TrainConfig, source)
    mcfg, pcfg = _model_config(raw, tcfg.kind, source), _pairs_config(raw, source)
    if (mcfg.img_size, mcfg.patch_size) != (pcfg.size, pcfg.patch):
        raise ValueError(
            f"{source}: {model_section(tcfg.kind)} img_size/patch_size "
            f"{mcfg.img_size}/{mcfg.patch_size} differ from pairs size/patch {pcfg.size}/{pcfg.patch}"
        )
    ecfg = section(raw, "edits", EditConfig, source) if "edits" in raw else None
    return RunConfig(arm or "", tcfg, mcfg, pcfg, tuple(overrides), ecfg, shadowed)


def flatten_overrides(spec: dict, where: str, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"train": {"steps": 4}, "pairs.size": 64}`` -> ``[("train.steps", 4), ("pairs.size", 64)]``."""
    out = []
    for key, value in spec.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"{where}: keys must be section names or dotted keys, got {key!r}")
        dotted = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and "." not in dotted:
            out += flatten_overrides(value, f"{where}.{key}", dotted)
        elif "." not in dotted:
            raise ValueError(f"{where}.{key}: expected a section of keys or a dotted section.key, got {value!r}")
        else:
            out.append((dotted, value))
    return out


def arm_names(params: dict, source: str = "params.yaml") -> list[str]:
    """The arm names of ``params["arms"]`` in file order (``[]`` without the section)."""
    arms = params.get("arms") or {}
    if not isinstance(arms, dict):
        raise ValueError(f"{source}:arms: expected a mapping name -> overrides, got {type(arms).__name__}")
    return list(arms)


# ----------------------------------------------------------------- adapters to models/pairs
def model_section(kind: str) -> str:
    """The params.yaml section holding the model config of ``kind``."""
    return kind  # "descriptor" / "matcher", owned by icdlib.models


def _model_config(raw: dict, kind: str, source: str):
    return section(raw, model_section(kind), CONFIGS[kind], source)


def _pairs_config(raw: dict, source: str):
    return pairs_config(raw, source)
