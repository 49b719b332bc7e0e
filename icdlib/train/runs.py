"""Named training runs: the ``train`` config, the arms, and their resolution from params.

A *run* is everything one training run reads: the ``train`` section
(:class:`TrainConfig`), the model section of its kind (``descriptor`` or ``matcher``,
owned by :mod:`icdlib.models`) and the ``pairs`` section (:mod:`icdlib.data.pairs`). An *arm*
is a named set of dotted overrides (``{"train.w_copynce": 5.0, "pairs.targets":
"uniform"}``) applied to params before the configs are built; :data:`ARMS` holds the
paper's arms and ablations, and a params.yaml section ``arms`` adds or replaces them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from icdlib.data import pairs_config
from icdlib.models import CONFIGS
from icdlib.params import section, to_dict


@dataclass(frozen=True)
class TrainConfig:
    """params.yaml section ``train`` (CPU profile defaults; method.md s.5 and s.8)."""

    kind: str = "descriptor"  # "descriptor" | "matcher": which model this run trains
    steps: int = 250  # optimiser steps; ~5 min on 2 CPU threads at the CPU preset (s.8)
    batch_size: int = 64  # global pairs per step, all processes and micro-steps together
    lr: float = 5e-4  # peak AdamW lr; s.8 calibration (paper: 6e-4 * sqrt(B/1024))
    weight_decay: float = 0.05  # s.8 calibration (paper: 0.04)
    warmup_steps: int = 25  # 10% of steps: keeps early random-init updates small
    warmup_start: float = 0.01  # warm-up starts at 1% of lr, as the released configs
    min_lr: float = 2e-6  # cosine floor of the released configs
    grad_clip: float = 3.0  # max global grad norm, released configs; 0 disables
    grad_accum: int = 1  # micro-steps per optimiser step (in-batch negatives per micro-batch)
    amp: bool = True  # bf16 autocast, on CUDA only (CPU always fp32)
    workers: int = 2  # DataLoader worker processes per rank (edits + tracing are CPU-bound)
    checkpoint_every: int = 50  # steps between resumable checkpoints (~1 min on CPU)
    seed: int = 0  # data order, edits, init; stochastic layers draw from (seed, step, rank)
    w_infonce: float = 1.0  # descriptor InfoNCE weight (method.md s.4)
    w_koleo: float = 5.0  # descriptor KoLeo weight (method.md s.4)
    w_copynce: float = 0.0  # CopyNCE weight; 0 = baseline, arms set 5 / 3 (s.3)
    w_bce: float = 1.0  # matcher BCE weight (s.4)
    temperature: float | None = 0.05  # fixed InfoNCE temperature (s.8); null = learnable scale
    gamma: float = 3.0  # CopyNCE target sharpening: 3 descriptor, 1 matcher (s.3)
    lam: float = 0.5  # CopyNCE weight of the query->reference direction (s.3)
    scale: float = 16.0  # CopyNCE logit scale tau (s.3)
    heads: str | None = None  # CopyNCE channels kept, "a:b"; null = all (released "6:6")
    copynce_over: str = "positives"  # matcher CopyNCE mean over "positives" or "all" pairs
    knn_checkpoint: str | None = None  # descriptor checkpoint to mine kNN hard negatives with
    knn_k: int = 16  # neighbours kept per image (paper 128 over 1M images; ours ~20k)
    knn_batch_size: int = 128  # images per forward pass while mining
    knn_cache: str | None = None  # folder of mined kNN tables shared by runs; null = the run folder
    init: str | None = None  # checkpoint to start from (weights only): fine-tuning
    backbone: str | None = None  # local DINO ViT checkpoint for the trunk; null = random init
    split: str = "training"  # data split the pairs come from
    log_every: int = 1  # steps between DVCLive metric rows

    def __post_init__(self):
        if self.kind not in ("descriptor", "matcher"):
            raise ValueError(f"train.kind must be 'descriptor' or 'matcher', got {self.kind!r}")
        for name in ("steps", "batch_size", "grad_accum", "checkpoint_every", "log_every", "knn_k"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        if self.workers < 0:
            raise ValueError(f"train.workers must be >= 0, got {self.workers}")
        if not 0 <= self.warmup_steps < self.steps:
            raise ValueError(
                f"train.warmup_steps must be in [0, steps={self.steps}), got {self.warmup_steps}"
            )
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"train.batch_size {self.batch_size} is not divisible by grad_accum {self.grad_accum}"
            )
        if self.grad_clip < 0:
            raise ValueError(f"train.grad_clip must be >= 0, got {self.grad_clip}")


# Named arms: dotted overrides applied to params before the configs are built. A
# params.yaml section ``arms`` adds arms or replaces these by name.
ARMS: dict[str, dict[str, Any]] = {
    "infonce": {"train.kind": "descriptor", "train.w_copynce": 0.0},
    "copynce": {"train.kind": "descriptor", "train.w_copynce": 5.0, "train.gamma": 3.0,
                "train.lam": 0.5, "train.scale": 16.0},
    "copynce_gamma1": {"train.kind": "descriptor", "train.w_copynce": 5.0, "train.gamma": 1.0},
    "copynce_lam1": {"train.kind": "descriptor", "train.w_copynce": 5.0, "train.lam": 1.0},
    "copynce_c2c": {"train.kind": "descriptor", "train.w_copynce": 5.0, "pairs.copy_vs_copy": 0.5},
    "copynce_uniform": {"train.kind": "descriptor", "train.w_copynce": 5.0, "pairs.targets": "uniform"},
    "matcher_bce": {"train.kind": "matcher", "train.w_copynce": 0.0},
    "matcher_copynce": {"train.kind": "matcher", "train.w_copynce": 3.0, "train.gamma": 1.0},
}


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

    def to_dict(self) -> dict:
        return {"arm": self.arm, "train": to_dict(self.train), "model": to_dict(self.model),
                "pairs": to_dict(self.pairs), "overrides": [list(o) for o in self.overrides]}


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
        params: parsed params.yaml (sections ``train``, ``pairs``, the model's; optional
            ``arms`` mapping name -> {dotted key: value} that adds to :data:`ARMS`; a
            top-level ``seed`` is the default of ``train.seed``).
        arm: arm name or None (params as they are).
        sets: ``["train.steps=10"]`` strings or a ``{"train.steps": 10}`` dict, applied
            after the arm.
    """
    overrides: list[tuple[str, Any]] = []
    if "seed" in params and "seed" not in (params.get("train") or {}):
        overrides.append(("train.seed", int(params["seed"])))  # the file's global seed
    if arm:
        arms = {**ARMS, **(params.get("arms") or {})}
        if arm not in arms:
            raise ValueError(f"unknown arm {arm!r}; known arms: {', '.join(sorted(arms))}")
        overrides += list((arms[arm] or {}).items())
    overrides += list(sets.items()) if isinstance(sets, dict) else parse_sets(sets)
    raw = apply_overrides(params, overrides)
    tcfg = section(raw, "train", TrainConfig, source)
    mcfg, pcfg = _model_config(raw, tcfg.kind, source), _pairs_config(raw, source)
    if (mcfg.img_size, mcfg.patch_size) != (pcfg.size, pcfg.patch):
        raise ValueError(
            f"{source}: {model_section(tcfg.kind)} img_size/patch_size "
            f"{mcfg.img_size}/{mcfg.patch_size} differ from pairs size/patch {pcfg.size}/{pcfg.patch}"
        )
    return RunConfig(arm or "", tcfg, mcfg, pcfg, tuple(overrides))


# ----------------------------------------------------------------- adapters to models/pairs
def model_section(kind: str) -> str:
    """The params.yaml section holding the model config of ``kind``."""
    return kind  # "descriptor" / "matcher", owned by icdlib.models


def _model_config(raw: dict, kind: str, source: str):
    return section(raw, model_section(kind), CONFIGS[kind], source)


def _pairs_config(raw: dict, source: str):
    return pairs_config(raw, source)
