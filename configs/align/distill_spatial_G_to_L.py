"""Distilling PE-Spatial-G into PE-Core-L14-336 at 448 px (32 x 32 tokens, as G at 448); the recipe is
pe_dense.align.recipes.distill_spatial_G, shared with distill_spatial_G_to_{T,S,B}.py.

The student starts from PE-Core-L's weights; the export keeps its architecture (with the unused CLIP
head), so load it with build_encoder("PE-Core-L14-336", weights=...).
"""

from pe_dense.align.recipes import distill_spatial_G

config = distill_spatial_G("PE-Core-L14-336", output_dir="outputs/distill_spatial_G_to_L")
