"""The first model: regional-embedding MIL (and its ABMIL / mean-pooling baselines).

::

    from ..model import ModelConfig, SelectionConfig, load_checkpoint
    config = ModelConfig(input_dim=emb.embedding_dim, model_type="regional")
    checkpoint = load_checkpoint("model.safetensors")   # CheckpointError when foreign/corrupt
    checkpoint.check_compatible(emb)                     # CheckpointError: other encoder/tiling
"""

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import MODEL_TYPES, ModelConfig, SelectionConfig
from .first_model import Bag, FirstModel, ModelOutput, make_bag
from .selection import grid_neighbours, select_patches

__all__ = [
    "MODEL_TYPES",
    "Bag",
    "Checkpoint",
    "FirstModel",
    "ModelConfig",
    "ModelOutput",
    "SelectionConfig",
    "grid_neighbours",
    "load_checkpoint",
    "make_bag",
    "save_checkpoint",
    "select_patches",
]
