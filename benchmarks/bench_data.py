"""How fast images get from JPEGs to training batches, against the usual tutorial pipeline.

    python benchmarks/bench_data.py [--n 3000] [--workers 2] [--repeats 3] [--data DIR] [--threads N]

Makes n synthetic faces (celeb.synth) in a temporary folder (or reuses --data, a folder that
`celeb synth` wrote) and prints, in images per second:

  (a) building the decode-once cache (celeb.data.cache.build_cache, 64 px, `workers` processes);
  (b) one epoch from the cache with celeb.data.loader.BatchLoader (batch 256, shuffled): uint8 batches
      ready for the device, and float batches with the light augmentation on the CPU;
  (c) the tutorial pipeline: torchvision.datasets.CelebA with PIL transforms
      Compose([CenterCrop(148), Resize(64), ToTensor()]) in a DataLoader with `workers` workers;

and the ratios (a)/(c) and (b)/(c) against their targets (2x, 100x, 15x); with a CUDA device, also
epochs on the GPU. Each figure is the best of `repeats` runs, taken in turns (tutorial, build,
loaders, tutorial, ...), since other processes sharing the cores make single runs noisy and should
weigh on every pipeline alike. A loader's one-time copy of its rows to the GPU is not part of its
epochs; the tutorial's epochs include starting its worker processes, as they do in the tutorial.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torchvision import datasets, transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from celeb.data.augment import make_augment  # noqa: E402
from celeb.data.cache import build_cache, open_cache  # noqa: E402
from celeb.data.loader import BatchLoader  # noqa: E402
from celeb.data.schema import ATTR_FILE, ATTRIBUTE_NAMES, IMAGE_DIR  # noqa: E402

# The CPU target for augmented float batches (15x) was set against a gather + float + flip;
# "light" adds per-sample shifts and colour jitter on top and is reported beside it.
TARGETS = {"cache build": 2.0, "epoch, uint8 batches": 100.0, "epoch, float + flip augment (CPU)": 15.0}


class SyntheticCelebA(datasets.CelebA):
    """torchvision's CelebA reading a synthetic folder.

    torchvision checks the MD5 of each annotation file against the real ones, which synthetic files
    cannot match, so the check is skipped; and it expects root/celeba/..., while `celeb synth` writes
    the flat layout root/img_align_celeba + root/*.txt, hence base_folder = "".
    """

    base_folder = ""

    def _check_integrity(self) -> bool:
        return True


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def read_ids_and_labels(data: Path) -> tuple[list[str], np.ndarray]:
    lines = (data / ATTR_FILE).read_text().splitlines()[2:]
    ids = [line.split()[0] for line in lines]
    labels = np.array([[v == "1" for v in line.split()[1:]] for line in lines], dtype=bool)
    assert labels.shape[1] == len(ATTRIBUTE_NAMES)
    return ids, labels


def cache_builder(ids: list[str], data: Path, work: Path, workers: int):
    builds = iter(range(1_000))
    return lambda: build_cache(ids, data / IMAGE_DIR, work / f"cache{next(builds)}", size=64, crop=148,
                               workers=workers, progress=False)


def loader_epoch(cache: Path, labels: np.ndarray, **kwargs):
    images, _ = open_cache(cache)
    loader = BatchLoader(images, labels, batch_size=256, shuffle=True, seed=0, **kwargs)
    epochs = iter(range(1_000))

    def epoch() -> None:
        loader.set_epoch(next(epochs))
        for _x, _y in loader:
            pass

    return epoch


def tutorial_epoch(data: Path, workers: int):
    transform = transforms.Compose([transforms.CenterCrop(148), transforms.Resize(64), transforms.ToTensor()])
    dataset = SyntheticCelebA(str(data), split="all", target_type="attr", transform=transform)
    loader = torch.utils.data.DataLoader(dataset, batch_size=256, shuffle=True, num_workers=workers)

    def epoch() -> None:
        for _x, _y in loader:
            pass

    return epoch


def bench_gpu(cache: Path, labels: np.ndarray, repeats: int) -> dict[str, float]:
    """Epochs on the GPU (cache held on the device, or gathered in pinned RAM and copied per batch)."""
    images, _ = open_cache(cache)
    runs = {
        "GPU, on device, uint8": dict(placement="device", output="uint8"),
        "GPU, on device, float + light": dict(placement="device", augment=make_augment("light")),
        "GPU, on device, float + heavy": dict(placement="device", augment=make_augment("heavy")),
        "GPU, pinned copies, float + light": dict(placement="ram", augment=make_augment("light")),
    }
    rates = {}
    for name, kwargs in runs.items():
        loader = BatchLoader(images, labels, batch_size=256, device="cuda", **kwargs)

        def epoch() -> None:
            for _x, _y in loader:
                pass
            torch.cuda.synchronize()

        epoch()  # warm-up: CUDA context, kernels
        rates[name] = len(images) / min(timed(epoch) for _ in range(repeats))
    return rates


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="synthetic images (default 3000)")
    parser.add_argument("--workers", type=int, default=2, help="cache-build processes and DataLoader workers")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the best is reported")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=None, help="reuse a folder written by `celeb synth`")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of this process (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="celeb-bench-") as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            from celeb.synth import synthesize

            data = work / "celeba"
            print(f"synthesizing {args.n} faces ...", file=sys.stderr)
            synthesize(data, args.n, args.seed, workers=args.workers, progress=True)
        ids, labels = read_ids_and_labels(data)

        build = cache_builder(ids, data, work, args.workers)
        seconds = {"cache build": [timed(build)]}
        cache = work / "cache0"
        runs = {
            "tutorial": tutorial_epoch(data, args.workers),
            "cache build": build,
            "epoch, uint8 batches": loader_epoch(cache, labels, output="uint8"),
            "epoch, float + flip augment (CPU)": loader_epoch(cache, labels, augment=make_augment("flip")),
            "epoch, float + light augment (CPU)": loader_epoch(cache, labels, augment=make_augment("light")),
            "epoch, float, no augment (CPU)": loader_epoch(cache, labels),
        }
        # interleaved, so that every pipeline sees the same mix of quiet and busy moments on shared cores
        for _ in range(args.repeats):
            for name, run in runs.items():
                seconds.setdefault(name, []).append(timed(run))
        rates = {name: len(ids) / min(times) for name, times in seconds.items()}
        tutorial = rates.pop("tutorial")

        gpu = bench_gpu(cache, labels, args.repeats) if torch.cuda.is_available() else {}

    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{len(ids)} images, 64 px, batch 256, {args.workers} workers; {os.cpu_count()} cores, "
          f"torch threads {torch.get_num_threads()}, load average {load}; best of {args.repeats}")
    print(f"{'':40s} {'images/s':>12s} {'vs (c)':>9s} {'target':>8s}")
    print(f"{'(c) tutorial: torchvision CelebA + PIL':40s} {tutorial:12,.0f}")
    for name, rate in rates.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else f"{target:>7.0f}x {'ok' if rate / tutorial >= target else 'MISSED'}"
        label = ("(a) " if name == "cache build" else "(b) ") + name
        print(f"{label:40s} {rate:12,.0f} {rate / tutorial:8.1f}x {verdict}")
    for name, rate in gpu.items():
        print(f"{'    ' + name:40s} {rate:12,.0f} {rate / tutorial:8.1f}x")


if __name__ == "__main__":
    main()
