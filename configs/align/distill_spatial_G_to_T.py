"""Distilling PE-Spatial-G into PE-Core-T16-384 at 512 px (32 x 32 tokens, as G at 448); the recipe is
pe_dense.align.recipes.distill_spatial_G, shared with distill_spatial_G_to_{T,S,B,L}.py."""

from pe_dense.align.recipes import distill_spatial_G

config = distill_spatial_G("PE-Core-T16-384", output_dir="outputs/distill_spatial_G_to_T")
