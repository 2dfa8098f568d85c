"""Tiny vision towers of the vision-language model types whose vision attention calls
transformers' ``apply_rotary_pos_emb_vision`` (q, k of shape (seq, heads, head_dim)), and their
inputs: for tests that run a tower with that one function replaced by ligerd's against the stock
tower (tests/python/test_rope_vision_wiring.py on the CPU, tests/gpu/test_rope_vision.py on a GPU).

The configuration is ``tiny_models.tiny_config(model_type).vision_config`` (one layer, width 32,
2 heads of 16), optionally with another head count and head dimension, and weights drawn with a
standard deviation of 0.2 (``initializer_range``; transformers' 0.02 leaves the attention of a
tiny tower nearly uniform, where even a wrong RoPE changes the features by 1e-4 only). The input
is one row of ``channels * temporal patch * patch_size**2`` pixels per patch for a (t, h, w) patch
grid, as the processors of these models flatten images, and ``grid_thw``.
"""

from __future__ import annotations

import importlib
from typing import Optional, Sequence, Tuple

import torch

from ligerd.testing import tiny_models

# model type -> (modeling module, vision tower class). Every class takes (pixels, grid_thw).
TOWERS = {
    "qwen2_vl": ("qwen2_vl", "Qwen2VisionTransformerPretrainedModel"),
    "qwen2_5_vl": ("qwen2_5_vl", "Qwen2_5_VisionTransformerPretrainedModel"),
    "qwen3_vl": ("qwen3_vl", "Qwen3VLVisionModel"),
    "qwen3_vl_moe": ("qwen3_vl_moe", "Qwen3VLMoeVisionModel"),
    "qwen3_5": ("qwen3_5", "Qwen3_5VisionModel"),
    "qwen3_5_moe": ("qwen3_5_moe", "Qwen3_5MoeVisionModel"),
    "glm4v": ("glm4v", "Glm4vVisionModel"),
    "glm4v_moe": ("glm4v_moe", "Glm4vMoeVisionModel"),
    "muse_glimmer": ("muse_glimmer", "MuseGlimmerVisionModel"),
}

_WIDTH_NAMES = ("hidden_size", "embed_dim")        # the tower's width (Qwen2-VL: embed_dim)
_HEAD_NAMES = ("num_heads", "num_attention_heads")


def modeling(model_type: str):
    return importlib.import_module("transformers.models.{0}.modeling_{0}".format(TOWERS[model_type][0]))


def vision_config(model_type: str, heads: Optional[int] = None, head_dim: Optional[int] = None,
                  init_std: float = 0.2):
    """The tiny vision config; ``heads`` / ``head_dim`` set the attention shape (the width becomes
    heads * head_dim)."""
    cfg = tiny_models.tiny_config(model_type).vision_config
    cfg.initializer_range = init_std
    if heads is None and head_dim is None:
        return cfg
    h = heads or next(getattr(cfg, n) for n in _HEAD_NAMES if getattr(cfg, n, None))
    width = h * (head_dim or 16)
    for name in _HEAD_NAMES:
        if getattr(cfg, name, None) is not None:
            setattr(cfg, name, h)
    for name in _WIDTH_NAMES:
        if getattr(cfg, name, None) is not None:
            setattr(cfg, name, width)
    return cfg


def build(model_type: str, cfg, seed: int = 0, dtype=None, device=None) -> torch.nn.Module:
    """The vision tower of ``model_type`` from ``cfg`` (vision_config), weights from ``seed``."""
    cls = getattr(modeling(model_type), TOWERS[model_type][1])
    torch.manual_seed(seed)
    tower = cls._from_config(cfg)
    tower.to(device=device, dtype=dtype or torch.float32)
    return tower


def patch_width(cfg) -> int:
    """Pixels per patch row: 3 channels x temporal patch x patch_size^2."""
    channels = getattr(cfg, "in_channels", None) or getattr(cfg, "num_channels", None) or 3
    temporal = getattr(cfg, "temporal_patch_size", None) or getattr(cfg, "patch_temporal", None) or 1
    return channels * temporal * cfg.patch_size ** 2


def inputs(cfg, grids: Sequence[Tuple[int, int, int]] = ((1, 4, 6),), seed: int = 0, dtype=None,
           device=None):
    """(pixels (patches, patch_width), grid_thw (images, 3)) for the (t, h, w) patch grids (h, w
    multiples of the spatial merge size, 2 in the tiny configs)."""
    grid = torch.tensor(list(grids), dtype=torch.long, device=device)
    n = int(grid.prod(-1).sum())
    gen = torch.Generator().manual_seed(seed)
    pixels = torch.randn(n, patch_width(cfg), generator=gen)
    pixels = pixels.to(device=device, dtype=dtype or torch.float32)
    return pixels, grid


def features(out) -> torch.Tensor:
    """The tower's per-patch output (its last hidden state)."""
    if isinstance(out, torch.Tensor):
        return out
    hidden = getattr(out, "last_hidden_state", None)
    return hidden if hidden is not None else out[0]


__all__ = ["TOWERS", "build", "features", "inputs", "modeling", "patch_width", "vision_config"]
