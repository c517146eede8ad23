"""Write an offline image folder for ``imagefolder:PATH``: scikit-learn's bundled digits, each rendered
in one hidden context as in ``digits-contexts`` (plain, inverted, rotated, mirrored-noisy; drawn with
``--seed``), upscaled to ``--size`` pixels (bilinear) and saved as 8-bit grayscale PNGs in one
sub-folder per class.

    python benchmarks/digits_folder.py --out /tmp/digits12 --size 12
    python benchmarks/paper_table.py --datasets imagefolder:/tmp/digits12 --input-size 12 --in-channels 1
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

import torch

from mpn_nas.data import digits_tensors, render_in_contexts
from mpn_nas.errors import UserError, run_script


def write_folder(out: Path, size: int, seed: int = 0) -> int:
    """Write the images under ``out/<digit>/<index>.png``; returns how many were written."""
    from PIL import Image

    if size < 8:
        raise UserError(f"--size must be at least the digits' own 8 pixels, got {size}")
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} is not empty; pass a new folder")
    images, labels = digits_tensors()
    rendered, _ = render_in_contexts(images, seed)
    scaled = torch.nn.functional.interpolate(rendered, size=(size, size), mode="bilinear", align_corners=False)
    pixels = ((scaled.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # [-1, 1] -> [0, 255]
    for index, (image, label) in enumerate(zip(pixels, labels.tolist())):
        folder = out / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{index:04d}.png")
    return len(labels)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder to write")
    parser.add_argument("--size", type=int, default=12, help="image side in pixels (default 12)")
    parser.add_argument("--seed", type=int, default=0, help="which context each image is rendered in")
    args = parser.parse_args(argv)
    count = write_folder(args.out, args.size, args.seed)
    print(f"wrote {count} images of {args.size}x{args.size} into {args.out}")
    return 0


if __name__ == "__main__":
    run_script(main, "digits_folder")
