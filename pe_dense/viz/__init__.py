"""Pictures of feature maps: PCA colours (RGB or LCh), correspondences, overlays and figures."""

from .color import lch_to_srgb, max_chroma
from .correspondence import Matches, cosine_map, mutual_matches, similarity_map, token_at, token_center
from .figures import layer_sweep_figure, matches_figure, panels_figure, save_figure, save_picture
from .images import colors_to_image, heatmap, mark_points, overlay, token_mask, upsample
from .pca import COLOR_MODES, PCAColorizer, pca_rgb

__all__ = [
    "COLOR_MODES", "Matches", "PCAColorizer", "colors_to_image", "cosine_map", "heatmap", "layer_sweep_figure",
    "lch_to_srgb", "mark_points", "matches_figure", "max_chroma", "mutual_matches", "overlay", "panels_figure",
    "pca_rgb", "save_figure", "save_picture", "similarity_map", "token_at", "token_center", "token_mask", "upsample",
]
