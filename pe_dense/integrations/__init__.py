"""Bridges to detection and segmentation frameworks; each imports its framework, the core never does."""
