"""Self-supervised pretraining of a ViT start: DINO through ``lightly``, never on copy pairs.

The paper fine-tunes DINO; no DINO weights can be fetched here, so this module trains a
DINO of our own on the training sources (the ``pretrain`` section of params.yaml) and writes
its teacher backbone as a timm-format ``.safetensors`` that :func:`icdlib.checkpoints.load_backbone_weights`
reads like a released DINO checkpoint (``paths.backbone``). The loss, the projection head, the
multi-crop transform and the schedules are ``lightly``'s (the ``pretrain`` extra); only the loop,
the determinism and the files are written here.

    python -m icdlib.train.pretrain --params params.yaml --out weights/dino_vit_tiny_cpu.safetensors

Every view is a pure function of ``(seed, epoch, index)`` and every optimiser step of
``(seed, step)``: a resumed run (``<out>.state.pt``, rewritten atomically every
``checkpoint_every`` steps) ends with the weights an uninterrupted one would, on the same
machine and versions. Beside the weights: ``<out stem>.json`` (config, steps, images seen,
seconds, sha256 of the weights, the commit, command and params file) and ``<out stem>.curve.csv``
(the learning curve).
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from icdlib.atomic import atomic_path, write_json
from icdlib.data import load_image
from icdlib.digest import file_sha256
from icdlib.models import DescriptorConfig
from icdlib.models.precision import bf16_enabled
from icdlib.params import load_params, run_commit, section
from icdlib.train.inputs import training_images
from icdlib.train.schedule import global_batch, lr_schedule


@dataclass(frozen=True)
class PretrainConfig:
    """params.yaml section ``pretrain``: DINO on the training sources (method.md s.10)."""

    steps: int = 1000  # optimiser steps: 64k images, ~3 passes over 20k sources (about an hour on 2 cores)
    batch_size: int = 64  # source images per step, each giving 2 global and n_local views
    lr: float = 5e-4  # peak AdamW lr (DINO's 5e-4 * batch / 256 is 1.25e-4 here; a short run wants more)
    min_lr: float = 1e-6  # cosine floor
    warmup_fraction: float = 0.05  # linear warm-up share of the steps
    weight_decay: float = 0.04  # cosine from here ...
    weight_decay_end: float = 0.4  # ... to here, as DINO
    momentum: float = 0.996  # teacher EMA momentum, cosine to 1 (DINO)
    out_dim: int = 4096  # DINO head prototypes (65,536 for ViT-S on ImageNet; a 20k-image set needs fewer)
    hidden_dim: int = 1024  # DINO head MLP width
    bottleneck_dim: int = 128  # DINO head bottleneck before the prototypes
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    local_views: int = 4  # small crops per image
    local_size: int = 48  # small crop side, px (3x3 patches of 16)
    grad_clip: float = 3.0
    freeze_last_layer_steps: int = 300  # the prototypes stay fixed this many steps (about one pass over 20k sources)
    workers: int = 1  # loader processes making the views
    checkpoint_every: int = 100
    amp_cpu: bool = True  # bf16 autocast on a CPU where it pays (icdlib.models.precision)
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "out_dim", "hidden_dim", "bottleneck_dim", "local_size",
                     "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"pretrain.{name} must be >= 1, got {getattr(self, name)}")
        if self.local_views < 0 or self.workers < 0:
            raise ValueError(f"pretrain.local_views and pretrain.workers must be >= 0, got "
                             f"{self.local_views}, {self.workers}")
        if not (self.lr > 0 and 0 <= self.min_lr <= self.lr):
            raise ValueError(f"pretrain: need lr > 0 and 0 <= min_lr <= lr, got {self.lr}, {self.min_lr}")
        if not 0 <= self.warmup_fraction < 1 or not 0 < self.momentum <= 1:
            raise ValueError(f"pretrain: warmup_fraction must be in [0, 1) and momentum in (0, 1], got "
                             f"{self.warmup_fraction}, {self.momentum}")


def _lightly():
    try:
        from lightly.loss import DINOLoss
        from lightly.models.modules import DINOProjectionHead
        from lightly.transforms.dino_transform import DINOTransform
    except ImportError as e:
        raise ImportError(f"pretraining needs the 'pretrain' extra (pip install -e '.[pretrain]'): {e}") from None
    return DINOLoss, DINOProjectionHead, DINOTransform


class Views(torch.utils.data.Dataset):
    """DINO's multi-crop views of the training sources, each a pure function of ``(seed, epoch, index)``.

    Item ``(index, epoch)`` -> list of ``[3, S, S]`` (2 global) and ``[3, s, s]`` (local) float tensors.
    """

    def __init__(self, paths: Sequence[Path], cfg: PretrainConfig, image_size: int):
        _, _, DINOTransform = _lightly()
        self.paths, self.seed = [Path(p) for p in paths], cfg.seed
        self.transform = DINOTransform(global_crop_size=image_size, local_crop_size=cfg.local_size,
                                       n_local_views=cfg.local_views)

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, key):
        index, epoch = key
        state = (random.getstate(), np.random.get_state())
        with torch.random.fork_rng(devices=[]):
            seeds = np.random.SeedSequence([self.seed, int(epoch), int(index)]).generate_state(3)
            torch.manual_seed(int(seeds[0]))
            np.random.seed(int(seeds[1]))  # lightly's blur and solarisation draw from numpy
            random.seed(int(seeds[2]))
            views = self.transform(load_image(self.paths[index]))
        random.setstate(state[0])
        np.random.set_state(state[1])
        return views


def _collate(items):
    return [torch.stack(v) for v in zip(*items)]


class _Batches(torch.utils.data.Sampler):
    def __init__(self, cfg: PretrainConfig, n: int, start: int):
        self.cfg, self.n, self.start = cfg, n, start

    def __len__(self):
        return self.cfg.steps - self.start

    def __iter__(self):
        for step in range(self.start, self.cfg.steps):
            idx, pos = global_batch(self.cfg.seed, step, self.cfg.batch_size, self.n)
            yield [(int(i), int(p // self.n)) for i, p in zip(idx, pos)]


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)


class Student(nn.Module):
    """A timm ViT trunk (the descriptor's shape, any input size) and the DINO projection head."""

    def __init__(self, model_cfg: DescriptorConfig, cfg: PretrainConfig):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer
        from functools import partial

        _, DINOProjectionHead, _ = _lightly()
        self.vit = VisionTransformer(
            img_size=model_cfg.img_size, patch_size=model_cfg.patch_size, embed_dim=model_cfg.embed_dim,
            depth=model_cfg.depth, num_heads=model_cfg.num_heads, mlp_ratio=model_cfg.mlp_ratio,
            num_classes=0, global_pool="token", dynamic_img_size=True,
            norm_layer=partial(nn.LayerNorm, eps=model_cfg.ln_eps))
        self.head = DINOProjectionHead(model_cfg.embed_dim, cfg.hidden_dim, cfg.bottleneck_dim, cfg.out_dim,
                                       freeze_last_layer=cfg.freeze_last_layer_steps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.vit(x))


def _no_decay(name: str, p: nn.Parameter) -> bool:
    return p.ndim < 2 or name.rsplit(".", 1)[-1] in ("pos_embed", "cls_token")


def _save_atomic(obj, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def pretrain(cfg: PretrainConfig, model_cfg: DescriptorConfig, paths: Sequence[Path], out: str | Path, *,
             progress: bool = True, resume: bool = True, provenance: dict | None = None) -> Path:
    """Train DINO on ``paths`` and write the teacher backbone to ``out`` (``.safetensors``); returns ``out``.

    Args:
        cfg: the ``pretrain`` section.
        model_cfg: the descriptor config whose trunk shape is pretrained (its ``img_size`` is the
            global crop size).
        paths: the source images (at least 2).
        out: the weights file, ``*.safetensors``; ``<stem>.json``, ``<stem>.curve.csv`` and, while
            running, ``<name>.state.pt`` sit beside it.
        resume: continue from ``<name>.state.pt`` when it exists and was written by the same config.
        provenance: what made the run (``commit``, ``command``, ``params``), copied into the record.
    """
    from safetensors.torch import save_file

    DINOLoss, _, _ = _lightly()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ValueError(f"pretrain: the weights file must end in .safetensors, got {out}")
    if len(paths) < 2:
        raise ValueError(f"pretrain: need at least 2 source images, got {len(paths)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    state_file, curve_file = out.with_name(out.name + ".state.pt"), out.with_suffix(".curve.csv")
    record = {"pretrain": asdict(cfg), "model": asdict(model_cfg), "images": len(paths)}

    torch.manual_seed(cfg.seed)
    student = Student(model_cfg, cfg)
    teacher = Student(model_cfg, cfg)
    teacher.load_state_dict(student.state_dict())  # DINOProjectionHead's weight norm defeats deepcopy
    teacher.requires_grad_(False)
    criterion = DINOLoss(output_dim=cfg.out_dim, warmup_teacher_temp=cfg.teacher_temp, teacher_temp=cfg.teacher_temp,
                         warmup_teacher_temp_epochs=0, student_temp=cfg.student_temp)
    decay = [p for n, p in student.named_parameters() if not _no_decay(n, p)]
    plain = [p for n, p in student.named_parameters() if _no_decay(n, p)]
    optimizer = torch.optim.AdamW([{"params": decay}, {"params": plain, "weight_decay": 0.0}], lr=cfg.lr)
    start, rows, seconds = 0, [], 0.0
    if resume and state_file.is_file():
        saved = torch.load(state_file, map_location="cpu", weights_only=True)
        if saved.get("record") == record:
            student.load_state_dict(saved["student"])
            teacher.load_state_dict(saved["teacher"])
            criterion.load_state_dict(saved["criterion"])
            optimizer.load_state_dict(saved["optimizer"])
            start, rows, seconds = int(saved["step"]), list(saved["rows"]), float(saved["seconds"])
        elif progress:
            print(f"{state_file}: written by another configuration; starting over", file=sys.stderr)

    lrs = lr_schedule(cfg.steps, cfg.lr, int(round(cfg.warmup_fraction * cfg.steps)), cfg.min_lr)
    from lightly.utils.scheduler import cosine_schedule
    from lightly.models.utils import update_momentum

    views = Views(paths, cfg, model_cfg.img_size)
    loader = torch.utils.data.DataLoader(views, batch_sampler=_Batches(cfg, len(views), start),
                                         num_workers=cfg.workers, collate_fn=_collate,
                                         worker_init_fn=_one_thread if cfg.workers else None)
    bf16 = bf16_enabled("cpu", True, cfg.amp_cpu)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    bar = tqdm(total=cfg.steps, initial=start, desc="pretrain dino", unit="step", disable=not progress)
    student.train()
    tic = time.perf_counter()
    for step, batch in zip(range(start, cfg.steps), loader):
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, step]).generate_state(1)[0]))
        wd = cosine_schedule(step, cfg.steps, cfg.weight_decay, cfg.weight_decay_end)
        momentum = cosine_schedule(step, cfg.steps, cfg.momentum, 1.0)
        optimizer.param_groups[0]["weight_decay"] = wd
        for g in optimizer.param_groups:
            g["lr"] = float(lrs[step])
        update_momentum(student, teacher, m=momentum)
        with amp:
            with torch.no_grad():
                t_out = [teacher(v).float() for v in batch[:2]]  # the teacher sees the global views only
            s_out = [student(v).float() for v in batch]
        loss = criterion(t_out, s_out, epoch=step)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"pretrain: loss is {loss.item()} at step {step}")
        loss.backward()
        student.head.cancel_last_layer_gradients(current_epoch=step)  # counts steps here, not epochs
        nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        rows.append({"step": done, "loss": loss.item(), "lr": float(lrs[step]), "weight_decay": wd,
                     "momentum": momentum, "images": done * cfg.batch_size})
        bar.set_postfix(loss=f"{rows[-1]['loss']:.3f}", refresh=False)
        bar.update(1)
        if done % cfg.checkpoint_every == 0 and done < cfg.steps:
            _save_atomic({"record": record, "step": done, "rows": rows,
                          "seconds": seconds + time.perf_counter() - tic, "student": student.state_dict(),
                          "teacher": teacher.state_dict(), "criterion": criterion.state_dict(),
                          "optimizer": optimizer.state_dict()}, state_file)
    bar.close()
    seconds += time.perf_counter() - tic

    weights = {k: v.detach().contiguous() for k, v in teacher.vit.state_dict().items()}
    with atomic_path(out) as tmp:  # one metadata key: several would be written in hash-map order, varying the bytes
        save_file(weights, str(tmp), metadata={"icdlib": "timm-vit backbone, DINO teacher of icdlib.train.pretrain"})
    digest = file_sha256(out)
    record.update({"steps_done": cfg.steps, "images_seen": cfg.steps * cfg.batch_size, "seconds": round(seconds, 1),
                   "bf16": bf16, "final_loss": rows[-1]["loss"] if rows else None, "sha256": digest,
                   "torch": torch.__version__, **(provenance or {})})
    write_json(out.with_suffix(".json"), record, indent=2, sort_keys=True)
    with atomic_path(curve_file) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["step"])
        writer.writeheader()
        writer.writerows(rows)
    state_file.unlink(missing_ok=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m icdlib.train.pretrain",
                                description="DINO pretraining (lightly) of the descriptor's ViT trunk on the "
                                            "training sources; writes a timm-format .safetensors backbone.")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--out", required=True, help="weights file, *.safetensors")
    p.add_argument("--data", default=None, help="DISC21-layout data root (default: params paths.data)")
    p.add_argument("--steps", type=int, default=None, help="override pretrain.steps")
    p.add_argument("--no-resume", action="store_true")
    args = p.parse_args(argv)
    try:
        params = load_params(args.params)
        raw = dict(params.get("pretrain") or {})
        if args.steps is not None:
            raw["steps"] = args.steps
        raw.setdefault("seed", int(params.get("seed", 0)))
        cfg = section({"pretrain": raw}, "pretrain", PretrainConfig, str(args.params))
        model_cfg = section(params, "descriptor", DescriptorConfig, str(args.params))
        data = args.data or Path(args.params).resolve().parent / (params.get("paths") or {}).get("data", "")
        paths = training_images(data)
        words = argv if argv is not None else sys.argv[1:]
        provenance = {"commit": run_commit(Path(args.params).resolve().parent), "params": str(args.params),
                      "command": " ".join(["python -m icdlib.train.pretrain", *words])}
        out = pretrain(cfg, model_cfg, paths, args.out, resume=not args.no_resume, provenance=provenance)
    except (ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
