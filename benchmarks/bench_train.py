"""CVAE training throughput at 64x64: images/s of forward + backward + optimizer step, per width k.

    python benchmarks/bench_train.py                       # CPU, and CUDA when there is one
    python benchmarks/bench_train.py --device cuda --compile --batch 64 256

For each width k in (16, 32, 64, 128) it times the step `celeb.training.loop.fit` takes (AdamW, the β-VAE
loss; on CUDA also bf16 autocast and channels_last, as fit does), after a few warm-up steps. On CUDA
it also counts the step's FLOPs with torch.utils.flop_counter.FlopCounterMode and prints the achieved
TFLOP/s and the fraction of the GPU's peak dense bf16 matrix throughput (from a table keyed by the
device name; an unknown GPU prints TFLOP/s only).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from celeb.models import ConditionalVAE, vae_loss

# Peak dense (no sparsity) bf16 tensor-core throughput, TFLOP/s, from the vendors' data sheets.
# Checked in order: the first name that is a substring of the device name wins.
PEAK_BF16_TFLOPS = (
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("GH200", 989.0),
    ("H100", 989.0),  # SXM
    ("H200", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L4", 121.0),
)


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS:
        if key in device_name:
            return value
    return None


def make_step(width: int, batch: int, device: torch.device, compile_model: bool, cond_dim: int = 3):
    """One training step of a fresh model on a fixed random batch, as fit() runs it."""
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    model = ConditionalVAE(image_size=64, latent_dim=64, width=width, cond_dim=cond_dim).to(device)
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if compile_model else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 3, 64, 64, device=device, generator=generator)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    cond = (torch.rand(batch, cond_dim, device=device, generator=generator) > 0.5).float()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = vae_loss(forward(x, cond, generator=generator), x, beta=1.0).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return model, step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(width: int, batch: int, device: torch.device, warmup: int, steps: int, compile_model: bool) -> dict:
    model, step = make_step(width, batch, device, compile_model)
    for _ in range(warmup):
        step()
    sync(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - started) / steps
    result = {"width": width, "batch": batch, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
              "ms_per_step": 1e3 * seconds, "images_per_s": batch / seconds}
    if device.type == "cuda":
        with FlopCounterMode(display=False) as counter:
            step()
        result["tflops"] = counter.get_total_flops() / seconds / 1e12
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--batch", type=int, nargs="+", default=[64])
    parser.add_argument("--device", choices=("all", "cpu", "cuda"), default="all")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="timed steps on the CPU (x10 on CUDA)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (CUDA only)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    devices = []
    if args.device in ("all", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("all", "cuda"):
        if torch.cuda.is_available():
            devices.append(torch.device("cuda"))
        elif args.device == "cuda":
            parser.error("no CUDA device here")

    for device in devices:
        cuda = device.type == "cuda"
        name = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} threads"
        peak = peak_tflops(name) if cuda else None
        mode = "bf16 autocast, channels_last" + (", torch.compile" if args.compile and cuda else "") if cuda else "fp32"
        print(f"\n{name} ({mode}); torch {torch.__version__}"
              + (f"; peak dense bf16 {peak:.0f} TFLOP/s" if peak else ("; peak unknown" if cuda else "")))
        header = f"{'width':>5} {'batch':>5} {'params':>8} {'ms/step':>9} {'images/s':>10}"
        print(header + (f" {'TFLOP/s':>8} {'% peak':>7}" if cuda else ""))
        for batch in args.batch:
            for width in args.widths:
                r = bench(width, batch, device, args.warmup, args.steps * (10 if cuda else 1),
                          args.compile and cuda)
                line = (f"{r['width']:>5} {r['batch']:>5} {r['params_m']:>7.2f}M {r['ms_per_step']:>9.2f} "
                        f"{r['images_per_s']:>10.0f}")
                if cuda:
                    line += f" {r['tflops']:>8.2f}" + (f" {100 * r['tflops'] / peak:>6.2f}%" if peak else "")
                print(line, flush=True)


if __name__ == "__main__":
    main()
