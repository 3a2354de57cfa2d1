"""Feature pictures: PCA fitting and LCh colouring against the usual alternatives, same inputs.

1. PCA fit on the tokens of 4 images at 512 px (4x32x32 tokens, C=768, like PE-Spatial-B16):
   pe_dense (eigendecomposition of the C x C Gram matrix, float64) vs a full SVD of the centred
   tokens and torch.pca_lowrank (both float64); all followed by the same projection and quantiles.
   The components must agree before anything is timed.
2. LCh colouring of a megapixel picture (1024x1024 upsampled scores): pe_dense (gamut-mapped,
   float32 torch bisection) vs scikit-image's lch2lab + lab2rgb at a fixed chroma scale, which
   clips out-of-gamut colours (the share it clips is recorded), and vs pe_dense's RGB mode.

    python benchmarks/viz.py [--repeats 5]
"""

from __future__ import annotations

import argparse

import harness
import numpy as np
import torch

from pe_dense.viz import PCAColorizer
from pe_dense.viz.color import lab_to_linear_rgb

TOKENS, CHANNELS, PICTURE = 4 * 32 * 32, 768, (1024, 1024)


def _features(seed=0) -> torch.Tensor:
    """Tokens with a few strong, separated directions over a decaying spectrum, as real features have."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.cat([torch.tensor([20.0, 12.0, 8.0]), torch.logspace(0.5, -1, CHANNELS - 3)])
    rotation = torch.linalg.qr(torch.randn(CHANNELS, CHANNELS, generator=g))[0]
    return torch.randn(TOKENS, CHANNELS, generator=g) @ rotation * scales


def _fit_with(decompose):
    """A PCA fit whose components come from ``decompose(centred) -> (3, C)``, then the shared projection."""
    def fit(tokens):
        x = tokens.double()
        centred = x - x.mean(0)
        components = decompose(centred)
        projected = centred @ components.T
        return components, projected.quantile(0.01, dim=0), projected.quantile(0.99, dim=0)
    return fit


ALTERNATIVE_FITS = {
    "full SVD": _fit_with(lambda c: torch.linalg.svd(c, full_matrices=False)[2][:3]),
    "torch.pca_lowrank": _fit_with(lambda c: torch.pca_lowrank(c, q=3, center=False, niter=4)[2].T),
}


def bench_pca(repeats):
    tokens = _features()
    ours = PCAColorizer().fit(tokens).components
    for name, fit in ALTERNATIVE_FITS.items():
        agreement = (fit(tokens)[0] * ours).sum(1).abs().min().item()  # |cos| of matching components
        if agreement < 0.999:
            raise SystemExit(f"{name} disagrees with pe_dense's components (|cos| {agreement:.4f})")
    fns = {"pe_dense": lambda: PCAColorizer().fit(tokens)}
    fns.update({name: (lambda f=f: f(tokens)) for name, f in ALTERNATIVE_FITS.items()})
    times = harness.time_interleaved(fns, torch.device("cpu"), repeats=repeats)
    return {"tokens": TOKENS, "channels": CHANNELS, "ms": {k: round(v * 1e3, 1) for k, v in times.items()},
            "speedup": {k: round(v / times["pe_dense"], 2) for k, v in times.items() if k != "pe_dense"}}


def bench_lch(repeats):
    from skimage.color import lab2rgb, lch2lab

    features = torch.randn(CHANNELS, 64, 64, generator=torch.Generator().manual_seed(1))
    lch, rgb = PCAColorizer("lch").fit(features), PCAColorizer("rgb").fit(features)
    # the same L* and hue, with the chroma a fixed scale of the (2, 3) radius: what skimage users do
    g = torch.Generator().manual_seed(2)
    lightness = 25 + 67 * torch.rand(PICTURE, generator=g)
    hue, radius = 2 * np.pi * torch.rand(PICTURE, generator=g), torch.rand(PICTURE, generator=g)
    skimage_lch = torch.stack([lightness, 100 * radius, hue], -1).double().numpy()
    clipped = lab_to_linear_rgb(lch2lab(skimage_lch))
    outside = float(((clipped < 0) | (clipped > 1)).any(-1).float().mean())
    fns = {
        "pe_dense lch": lambda: lch.transform(features, size=PICTURE),
        "skimage lch2lab+lab2rgb (clips)": lambda: lab2rgb(lch2lab(skimage_lch)),
        "pe_dense rgb": lambda: rgb.transform(features, size=PICTURE),
    }
    times = harness.time_interleaved(fns, torch.device("cpu"), repeats=repeats)
    return {"picture": list(PICTURE), "ms": {k: round(v * 1e3, 1) for k, v in times.items()},
            "speedup_vs_skimage": round(times["skimage lch2lab+lab2rgb (clips)"] / times["pe_dense lch"], 2),
            "skimage_out_of_gamut_share": round(outside, 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cpu")
    results = {"environment": harness.environment(device), "pca_fit": bench_pca(args.repeats),
               "lch_colouring": bench_lch(args.repeats)}
    for key in ("pca_fit", "lch_colouring"):
        print(key, results[key])
    print("saved", harness.save("viz_cpu", results))


if __name__ == "__main__":
    main()
