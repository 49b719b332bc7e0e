"""What one run trains: its model, its objective (the model and its losses) and its optimiser.

:func:`icdlib.train.train` assembles a run from these; benchmarks and experiments use them to
time or probe a run's step without its loop.
"""

from __future__ import annotations

import torch
from torch import nn

from icdlib.models import build_descriptor, build_matcher
from icdlib.train.objectives import DescriptorObjective, MatcherObjective
from icdlib.train.runs import RunConfig, TrainConfig


def build_run_model(run: RunConfig) -> nn.Module:
    """A randomly initialised model of ``run.train.kind`` from the run's model config (global torch RNG)."""
    build = build_descriptor if run.train.kind == "descriptor" else build_matcher
    return build(run.model)


def build_objective(run: RunConfig, model: nn.Module) -> nn.Module:
    """The run's objective on ``model``: its losses and their settings (``train`` and ``pairs.targets``)."""
    t = run.train
    cn = dict(gamma=t.gamma, lam=t.lam, scale=t.scale, heads=t.heads, targets=run.pairs.targets)
    if t.kind == "descriptor":
        return DescriptorObjective(model, w_infonce=t.w_infonce, w_koleo=t.w_koleo, w_copynce=t.w_copynce,
                                   temperature=t.temperature, log_scale_init=t.log_scale_init,
                                   bn_per_side=t.bn_per_side, **cn)
    return MatcherObjective(model, w_bce=t.w_bce, w_copynce=t.w_copynce,
                            copynce_over=t.copynce_over, **cn)


def no_decay(name: str, p: nn.Parameter, exempt_tokens: bool) -> bool:
    """Whether parameter ``name`` is exempt from weight decay: biases, norm weights and scalars
    (``ndim <= 1``, e.g. the InfoNCE log-scale) always; with ``exempt_tokens`` also the position
    embedding and the class / fusion tokens (what timm's ``no_weight_decay()`` names), as released."""
    if p.ndim < 2:
        return True
    leaf = name.rsplit(".", 1)[-1]
    return exempt_tokens and leaf in ("pos_embed", "cls_token", "fusion_token", "reg_token", "dist_token")


def build_optimizer(objective: nn.Module, t: TrainConfig) -> torch.optim.Optimizer:
    """AdamW; :func:`no_decay` parameters get no weight decay.

    With ``t.head_lr_scale != 1`` the parameters outside the start trunk (``model.vit``: the
    descriptor's projection, the matcher's fusion token, token norm and head) form their own
    groups, whose ``lr_scale`` the schedule multiplies in; at 1 the two groups stay as they were.
    """
    split = t.head_lr_scale != 1.0
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, p in objective.named_parameters():
        if p.requires_grad:
            head = split and not name.startswith("model.vit.")
            groups.setdefault((head, no_decay(name, p, t.wd_exempt_tokens)), []).append(p)
    return torch.optim.AdamW(
        [{"params": ps, "weight_decay": 0.0 if plain else t.weight_decay,
          "lr_scale": t.head_lr_scale if head else 1.0} for (head, plain), ps in sorted(groups.items())],
        lr=t.peak_lr, betas=(0.9, 0.999))
