"""The conditional VAE against the hierarchical VAE (task nvae) on the same synthetic faces, at the
same wall-clock training budget.

    python benchmarks/bench_models.py [--n 3000] [--budget 180] [--out benchmarks/out/models] [--device cpu]

Both models use the discretised logistic likelihood (cvae.recon: logistic), β = 1 (the plain ELBO,
after a one-epoch KL warm-up) and the same conditions, batch size and learning rate, so their
val bits/dim bound the same NLL. Each model first trains one epoch to measure its speed, then is
trained for as many epochs as fit in `--budget` seconds (its lr schedule spans them). Printed per
model: val bits/dim and MSE; active dims, MIG and labelled dims of the (top) latents; parameters
and training images/s. Written to `--out`: each model's run folder, and side by side the two
models' reconstructions (originals above, as in the run folders) and samples from the prior
at temperature 0.7 (its σ scaled, as NVAE shows its samples).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.utils import make_grid, save_image

from celeb.config import config_from_dict
from celeb.data.dataset import load_data
from celeb.training.loop import fit
from celeb.training.tracking import LocalTracker

from synthetic import make_data  # this folder

COMMON = {"batch_size": 64, "lr": 2e-3, "lr_warmup_epochs": 0.2, "grad_clip": 200.0, "num_recon": 8,
          "data.augment": "flip", "cvae.recon": "logistic", "cvae.beta": 1.0, "cvae.warmup_epochs": 1.0,
          "cvae.conditions": ["Male", "Smiling"], "cvae.latent_dim": 32, "cvae.panel_faces": 3}
MODELS = {"cvae": {"task": "cvae", "cvae.width": 32},
          "nvae": {"task": "nvae", "cvae.width": 16, "nvae.scales": 2, "nvae.groups": 2, "nvae.latent_channels": 8}}
SHOWN = ("val/bits_per_dim", "val/mse", "val/active_dims", "val/mig_fixed", "val/labelled_dims")


def train(name: str, config: dict, data, budget: float, out: Path) -> dict:
    """Calibrate one epoch, then train for the budget; return the row of the table."""
    started = time.perf_counter()
    fit(config_from_dict({**config, "epochs": 1, "cvae.panel_every": 0}), data)
    epoch_s = time.perf_counter() - started
    epochs = max(1, int(budget // epoch_s))
    run_dir = out / name
    shutil.rmtree(run_dir, ignore_errors=True)
    started = time.perf_counter()
    result = fit(config_from_dict({**config, "epochs": epochs}), data, tracker=LocalTracker(run_dir), run_dir=run_dir)
    seconds = time.perf_counter() - started
    final = result.history[-1]
    speeds = [row["train/images_per_s"] for row in result.history]
    return {"model": name, "epochs": epochs, "train_s": seconds,
            "parameters": sum(p.numel() for p in result.model.parameters()),
            "images_per_s": float(np.median(speeds)), **{k: final[k] for k in SHOWN}, "_model": result.model}


def side_by_side(paths: list[Path], target: Path) -> None:
    images = [Image.open(p).convert("RGB") for p in paths]
    gap = 12
    canvas = Image.new("RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)),
                       "white")
    x = 0
    for image in images:
        canvas.paste(image, (x, 0))
        x += image.width + gap
    canvas.save(target)


@torch.no_grad()
def save_samples(rows: list[dict], out: Path, seed: int = 0, temperature: float = 0.7) -> Path:
    paths = []
    for row in rows:
        model = row["_model"]
        cond = torch.tensor([[float(m), float(s)] for m in (0, 1) for s in (0, 1)] * 4)  # every condition, 4 times
        images = model.sample(len(cond), cond, generator=torch.Generator().manual_seed(seed), temperature=temperature)
        path = out / f"samples_{row['model']}.png"
        save_image(make_grid(images, nrow=4, padding=2, pad_value=1.0), path)
        paths.append(path)
    side_by_side(paths, out / "samples_side_by_side.png")
    return out / "samples_side_by_side.png"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="synthetic faces")
    parser.add_argument("--budget", type=float, default=180.0, help="training seconds per model")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/models"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-root", type=Path, default=None, help="where the synthetic data is kept (default: a temp dir)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="celeb-bench-models-") as tmp:
        data_dir = make_data(args.data_root or Path(tmp), args.n)
        data = load_data(data_dir)
        rows = [train(name, {**COMMON, **model, "device": args.device, "data.data_dir": str(data_dir)}, data,
                         args.budget, args.out) for name, model in MODELS.items()]
    side_by_side([args.out / r["model"] / "reconstructions.png" for r in rows], args.out / "reconstructions_side_by_side.png")
    samples = save_samples(rows, args.out)

    print(f"\n{args.n} synthetic faces, {args.budget:g} s of training per model, device {args.device}\n")
    print("| model | epochs | val bits/dim | val MSE | active dims | MIG | labelled dims | parameters | train images/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['epochs']} | {r['val/bits_per_dim']:.3f} | {r['val/mse']:.4f} | "
              f"{r['val/active_dims']} | {r['val/mig_fixed']:.3f} | {r['val/labelled_dims']:.0f} | "
              f"{r['parameters']:,} | {r['images_per_s']:,.0f} |")
    print(f"\nreconstructions: {args.out / 'reconstructions_side_by_side.png'} (cvae left, nvae right)")
    print(f"samples:         {samples} (prior σ x 0.7, cvae left, nvae right)")
    (args.out / "table.json").write_text(json.dumps([{k: v for k, v in r.items() if k != "_model"} for r in rows],
                                                    indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
