"""The PE vision encoder: configs, the transformer, checkpoint loading and conversion; timm ViTs behind the
same interface (``timm:NAME``)."""

from .build import RandomWeightsWarning, build_encoder, encoder_config, encoder_weights_file
from .checkpoint import CheckpointError, LoadReport, load_weights, read_checkpoint, save_state_dict, to_official
from .configs import (
    MODEL_CONFIGS,
    RELEASED_G_STAGE_ENDS,
    PEVisionConfig,
    UnknownModelError,
    get_config,
    list_models,
    stage_end_blocks,
)
from .convert import official_to_timm, resize_patch_embed, timm_to_official
from .hub import WeightsNotFoundError, resolve_weights
from .preprocess import Pixels, load_image, preprocess
from .timm_encoder import TimmConfig, TimmEncoder, is_timm_name
from .vision_transformer import PEVisionTransformer

__all__ = [
    "MODEL_CONFIGS", "RELEASED_G_STAGE_ENDS", "CheckpointError", "LoadReport", "PEVisionConfig", "PEVisionTransformer",
    "Pixels", "RandomWeightsWarning", "TimmConfig", "TimmEncoder", "UnknownModelError", "WeightsNotFoundError",
    "build_encoder", "encoder_config", "encoder_weights_file", "get_config", "is_timm_name", "list_models",
    "load_image", "load_weights", "official_to_timm", "preprocess", "read_checkpoint", "resize_patch_embed",
    "resolve_weights", "save_state_dict", "stage_end_blocks", "timm_to_official", "to_official",
]
