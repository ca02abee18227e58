"""Training throughput of the 64-px CVAE: one eager trial against P fused trials (celeb.training.fused).

    PYTHONPATH=. python benchmarks/bench_gpu.py [--widths 16 32 64 128] [--batches 64 256]
                                                [--fused 2 4 8 16] [--steps 20] [--quick]

Runs on the library alone (no Ray, Optuna or W&B), on CUDA when there is one, else on the CPU. For
each width k and batch size it times `steps` training steps (forward, backward, AdamW) of one model
and of P models fused into one vmapped step, and prints images/s (all trials together) and, on a GPU,
the share of the bf16 peak (`--peak-tflops`, 790 for an H200) that the step's FLOPs reach (counted
once with torch.utils.flop_counter). `--quick` is a seconds-long run for tests.

Not measured yet (the rest of the project's GPU issue): CUDA graphs / torch.compile of the step,
P packed processes per GPU, the Inception classifier and the profiler's busy share.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.func import functional_call, stack_module_state
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celeb.models import ConditionalVAE, vae_loss  # noqa: E402
from celeb.training.fused import AdamWState  # noqa: E402


def one_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    loss = vae_loss(model(x), x, beta=1.0).total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def fused_step(template, params, buffers, state: AdamWState, x: torch.Tensor, lrs: torch.Tensor) -> None:
    forward = torch.vmap(lambda p, b, xi: functional_call(template, (p, b), (xi,)), randomness="different")
    out = forward(params, buffers, x)
    loss = sum(vae_loss(type(out)(*(t[k] for t in out)), x[k], beta=1.0).total for k in range(len(x)))
    for p in params.values():
        p.grad = None
    loss.backward()
    state.step(params, lrs, torch.zeros_like(lrs))


def timed(step, steps: int, device: torch.device) -> float:
    step()  # warm-up: allocations, kernel selection
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - started) / steps


def step_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        vae_loss(model(x), x, beta=1.0).total.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench(width: int, batch: int, fused: list[int], steps: int, device: torch.device, peak: float) -> list[str]:
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 64, 64, device=device)
    model = ConditionalVAE(64, 64, width).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    with autocast:
        seconds = timed(lambda: one_step(model, optimizer, x), steps, device)
    flops = step_flops(model, x)
    rows = [row(width, batch, "eager, 1 trial", batch / seconds, flops / seconds, device, peak)]
    for p in fused:
        models = [ConditionalVAE(64, 64, width).to(device) for _ in range(p)]
        params, buffers = stack_module_state(models)
        template = ConditionalVAE(64, 64, width).to("meta")
        state, lrs = AdamWState.like(params), torch.full((p,), 1e-3)
        xs = x.unsqueeze(0).expand(p, *x.shape).contiguous()
        with autocast:
            seconds = timed(lambda: fused_step(template, params, buffers, state, xs, lrs), steps, device)
        rows.append(row(width, batch, f"fused, {p} trials", p * batch / seconds, p * flops / seconds, device, peak))
    return rows


def row(width: int, batch: int, what: str, images_per_s: float, flops_per_s: float, device: torch.device,
        peak: float) -> str:
    share = f"{100 * flops_per_s / (peak * 1e12):.2f}%" if device.type == "cuda" else "n/a (CPU)"
    return f"| {width} | {batch} | {what} | {images_per_s:,.0f} | {share} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--fused", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the device's bf16 peak (H200: 790)")
    parser.add_argument("--quick", action="store_true", help="k=8, batch 8, P=2, 2 steps: a test of the script")
    args = parser.parse_args()
    if args.quick:
        args.widths, args.batches, args.fused, args.steps = [8], [8], [2], 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads; images/s counts every trial's images")
    print("| k | batch | step | images/s | % of bf16 peak |\n|---|---|---|---|---|")
    for width in args.widths:
        for batch in args.batches:
            for line in bench(width, batch, args.fused, args.steps, device, args.peak_tflops):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
