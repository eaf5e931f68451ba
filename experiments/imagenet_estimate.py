"""What the DARTS ImageNet transfer (``+experiment=imagenet_mobile``) asks of a machine: the network's size and
multiply-adds counted by darts_lite, how fast this machine's CPU decodes and crops ImageNet-sized JPEGs the way
``data=imagenet`` streams them, and from those an ESTIMATE of the training's GPU hours and of the decoding cores it
needs. No GPU was measured: the GPU hours are arithmetic from the FLOPs at assumed effective throughputs.

    python experiments/imagenet_estimate.py            # about a minute
    python experiments/imagenet_estimate.py --images 200

The decode rate: generated 500x375 JPEGs (ImageNet's typical size), each opened, converted to RGB, Inception-cropped
and resized to 224 (training) or centre-cropped (test), by darts_lite.image_folder.BatchReader, in this process and
with worker processes. Writes results/imagenet_estimate.json and the .md made from it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine, machine_text, write_result

RESULT = RESULTS / "imagenet_estimate.md"  # and .json
IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012's training images
EPOCHS = 250  # conf/train/darts_imagenet.yaml
ASSUMED_TFLOPS = (5, 10, 20)  # effective training throughputs the estimate is given for (assumptions, not measured)


def network_size() -> dict:
    import torch

    from darts_lite.measure import count_flops
    from darts_lite.spaces.darts.eval import EvalNetwork

    net = EvalNetwork("DARTS_V2", C=48, num_classes=1000, layers=14, auxiliary=True, dataset="imagenet")
    net.eval()
    flops = count_flops(net, (3, 224, 224))
    with torch.no_grad():
        out = net(torch.zeros(1, 3, 224, 224))
    assert (out[0] if isinstance(out, tuple) else out).shape == (1, 1000)
    return {"params": net.num_parameters(), "params_with_aux": net.num_parameters(auxiliary=True), "flops": flops,
            "macs": flops // 2}


def decode_rate(images: int, workers: int, folder: Path, train: bool) -> float:
    import torch

    from darts_lite import image_folder as folders

    paths = tuple(str(p) for p in sorted(folder.glob("*.JPEG")))[:images]
    split = folders.FolderSplit(paths, torch.zeros(len(paths), dtype=torch.int64))
    steps = [(c,) for c in torch.arange(len(paths)).split(32)]
    reader = folders.BatchReader(split, "RGB", 224, steps, crop=0.875, random_crop=train, seed=0, epoch=0)
    start = time.perf_counter()
    n = sum(len(x) for (x, _), in folders.read_batches(reader, workers))
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="generated JPEGs decoded per measurement")
    args = parser.parse_args()
    import numpy as np
    from PIL import Image

    size = network_size()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        for i in range(args.images):  # smooth noise: compresses like a photograph more than white noise does
            small = rng.integers(0, 256, (24, 32, 3)).astype(np.uint8)
            Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(folder / f"{i:05d}.JPEG", quality=90)
        for workers in (0, 2):
            for train in (True, False):
                rates[f"{'train' if train else 'test'}_workers{workers}"] = decode_rate(args.images, workers, folder, train)
    train_flops = 3 * size["flops"] * IMAGENET_TRAIN_IMAGES * EPOCHS  # forward + backward ~ 3 forwards
    per_core = rates["train_workers0"]
    estimates = []
    for tflops in ASSUMED_TFLOPS:
        images_per_s = tflops * 1e12 / (3 * size["flops"])
        estimates.append({"tflops": tflops, "gpu_hours": train_flops / (tflops * 1e12) / 3600,
                          "images_per_s": images_per_s, "decode_cores": images_per_s / per_core})
    result = {"machine": machine(), "network": size, "decode_images_per_s": rates, "images": args.images,
              "train_images": IMAGENET_TRAIN_IMAGES, "epochs": EPOCHS, "train_flops": train_flops,
              "estimates": estimates}
    md = [
        "# The DARTS ImageNet transfer: size, decoding, and an estimate of its cost",
        "",
        f"Measured by `experiments/imagenet_estimate.py` on {machine_text(result['machine'])}.",
        "",
        f"DARTS_V2 at C=48, 14 cells, 224 px, 1000 classes (counted by darts_lite): {size['params'] / 1e6:.2f}M "
        f"parameters without the auxiliary head ({size['params_with_aux'] / 1e6:.2f}M with it), "
        f"{size['macs'] / 1e6:.0f}M multiply-adds per image.",
        "",
        f"Decoding {args.images} generated 500x375 JPEGs to 224x224 as `data=imagenet` streams them (images per second):",
        "",
        "| pipeline | in the training process | 2 worker processes |",
        "| --- | --- | --- |",
        f"| training (random resized crop) | {rates['train_workers0']:.0f} | {rates['train_workers2']:.0f} |",
        f"| test (resize 256, centre 224) | {rates['test_workers0']:.0f} | {rates['test_workers2']:.0f} |",
        "",
        f"**Estimate, not a measurement**: 250 epochs of {IMAGENET_TRAIN_IMAGES:,} images at 3x the forward FLOPs "
        f"are {train_flops / 1e18:.2f} x 10^18 FLOPs. At an assumed effective throughput (data loading not counted):",
        "",
        "| effective TFLOP/s (assumed) | GPU hours | images/s the GPU takes | CPU cores decoding at this machine's rate |",
        "| --- | --- | --- | --- |",
        *(f"| {e['tflops']} | {e['gpu_hours']:.0f} | {e['images_per_s']:.0f} | {e['decode_cores']:.0f} |"
          for e in estimates),
    ]
    write_result(RESULT, result, md)


if __name__ == "__main__":
    main()
