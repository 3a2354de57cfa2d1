"""The DAVIS 2017 folder layout (its label PNGs are read and written by pe_dense.data.label_maps)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DavisLayout:
    """A DAVIS 2017 style root: ImageSets/<year>/<set>.txt, JPEGImages/<res>/<seq>, Annotations/<res>/<seq>."""

    root: Path
    resolution: str = "480p"
    year: str = "2017"

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    def sequences(self, image_set: str = "val") -> list[str]:
        listing = self.root / "ImageSets" / self.year / f"{image_set}.txt"
        if not listing.is_file():
            raise FileNotFoundError(f"{listing} does not exist: is '{self.root}' a DAVIS {self.year} folder?")
        names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
        if not names:
            raise ValueError(f"{listing} lists no sequences")
        return names

    def frames_dir(self, sequence: str) -> Path:
        return self.root / "JPEGImages" / self.resolution / sequence

    def annotations_dir(self, sequence: str) -> Path:
        return self.root / "Annotations" / self.resolution / sequence

    def annotations(self, sequence: str) -> list[Path]:
        folder = self.annotations_dir(sequence)
        if not folder.is_dir():
            raise FileNotFoundError(f"annotations of '{sequence}' not found at {folder}")
        return sorted(folder.glob("*.png"))
