"""pe_dense: dense prediction on Meta's Perception Encoder (PE-Spatial, PE-Core, PE-Lang)."""

from .feature_store import FeatureStore
from .models import (
    PEVisionConfig,
    PEVisionTransformer,
    build_encoder,
    get_config,
    list_models,
    load_image,
    preprocess,
)

__version__ = "0.3.0"  # the one place the version is written: setup.py reads it here
__all__ = ["FeatureStore", "PEVisionConfig", "PEVisionTransformer", "build_encoder", "get_config", "list_models",
           "load_image", "preprocess"]
