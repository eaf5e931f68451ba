"""Write scikit-learn's bundled digits as an image folder, the layout ``data=folder`` reads: ROOT/train/<digit>/*.png
and ROOT/test/<digit>/*.png (8x8 grayscale PNGs, darts_lite's fixed digits split), to try ``data=folder`` without
images of your own.

    python experiments/digits_folder.py data/digits_folder
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="the folder to write (created; files already there are replaced)")
    args = parser.parse_args()
    import numpy as np
    from PIL import Image

    from darts_lite.data import load_dataset

    data = load_dataset("digits")
    for split in ("train", "test"):
        x, y = data[split]
        for i, (image, label) in enumerate(zip(x, y.tolist())):
            folder = args.root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (image[0].numpy() * (255 / 16)).round().astype(np.uint8)  # digits' values run 0..16
            Image.fromarray(pixels, mode="L").save(folder / f"{i:04d}.png")
        print(f"{args.root / split}: {len(y)} images in {len(set(y.tolist()))} class folders")


if __name__ == "__main__":
    main()
