"""Training throughput on one device: the 64-px CVAE eager, compiled, as P packed processes and as P
fused trials; the Inception V3 classifier at 299 px; and how busy the GPU is with the data path in.

    PYTHONPATH=. python benchmarks/bench_gpu.py [--widths 16 32 64 128] [--batches 64 256]
                                                [--packed 2 4 8] [--fused 2 4 8 16] [--steps 20] [--quick]

Runs on the library alone (no Ray, Optuna or W&B), on CUDA when there is one, else on the CPU.
For each width k and batch size it times `steps` training steps (forward, backward, AdamW) and
prints images/s (all trials together) and, on a GPU, the share of the bf16 peak (`--peak-tflops`,
790 for an H200) that the step's FLOPs reach (counted once with torch.utils.flop_counter):

- eager: one trial, as `fit` runs it without compile;
- compiled: one trial through torch.compile as `fit` runs it with `compile: auto` (mode
  reduce-overhead, CUDA graphs, on a GPU; skipped on the CPU, where auto leaves it off, unless
  `--compile-cpu`);
- packed, P processes: P processes on the device, each training one eager trial, started together
  (what Ray's fractional GPUs amount to); images/s summed;
- fused, P trials: P trials as one vmapped model (celeb.training.fused).

Then the Inception V3 classifier at 299 px (images/s, eager), and the busy share: a real epoch loop
(device-resident uint8 cache -> BatchLoader with light augmentation -> step) under the profiler,
GPU kernel time over wall time (on a GPU only). `--quick` is a seconds-long run for tests.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.multiprocessing as mp
from torch.func import functional_call, stack_module_state
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from celeb.data.augment import make_augment  # noqa: E402
from celeb.data.loader import BatchLoader  # noqa: E402
from celeb.models import ConditionalVAE, build_classifier, classifier_loss, vae_loss  # noqa: E402
from celeb.training.fused import AdamWState  # noqa: E402
from celeb.training.runtime import resolve_compile  # noqa: E402


def cvae_step(model: Callable, optimizer: torch.optim.Optimizer, x: torch.Tensor, graphed: bool) -> None:
    if graphed:
        torch.compiler.cudagraph_mark_step_begin()
    eps = torch.randn(x.shape[0], 64, device=x.device)
    loss = vae_loss(model(x, eps=eps), x, beta=1.0).total
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def fused_step(template, params, buffers, state: AdamWState, x: torch.Tensor, groups: list[dict]) -> None:
    eps = torch.randn(x.shape[0], x.shape[1], 64, device=x.device)
    out = torch.vmap(lambda p, b, xi, ei: functional_call(template, (p, b), (xi,), {"eps": ei}))(params, buffers, x, eps)
    loss = sum(vae_loss(type(out)(*(t[k] for t in out)), x[k], beta=1.0).total for k in range(len(x)))
    for p in params.values():
        p.grad = None
    loss.backward()
    state.step(params, groups)


def timed(step: Callable[[], None], steps: int, device: torch.device, warmup: int = 1) -> float:
    """Seconds per step, after `warmup` steps (allocations, kernel selection, compilation)."""
    for _ in range(warmup):
        step()
    synchronize(device)
    started = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return (time.perf_counter() - started) / steps


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_flops(model: torch.nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter:
        vae_loss(model(x), x, beta=1.0).total.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def eager_or_compiled(width: int, batch: int, steps: int, device: torch.device, compiled: bool) -> float:
    """Images/s of one CVAE trial, eager or as `fit` compiles it."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 64, 64, device=device)
    raw = ConditionalVAE(64, 64, width).to(device)
    mode = resolve_compile(True, device) if compiled else None
    model = torch.compile(raw, mode=mode, dynamic=False) if mode else raw
    optimizer = torch.optim.AdamW(raw.parameters(), lr=1e-3)
    with autocast(device):
        seconds = timed(lambda: cvae_step(model, optimizer, x, mode == "reduce-overhead"), steps, device,
                        warmup=3 if mode else 1)
    return batch / seconds


def packed_worker(rank: int, width: int, batch: int, steps: int, device: str, barrier, results) -> None:
    torch.set_num_threads(max(1, torch.get_num_threads() // barrier.parties))
    dev = torch.device(device)
    torch.manual_seed(rank)
    x = torch.rand(batch, 3, 64, 64, device=dev)
    model = ConditionalVAE(64, 64, width).to(dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with autocast(dev):
        cvae_step(model, optimizer, x, False)
        synchronize(dev)
        barrier.wait()  # every process warmed up: time them together
        seconds = timed(lambda: cvae_step(model, optimizer, x, False), steps, dev, warmup=0)
    results.put(batch / seconds)


def packed(width: int, batch: int, p: int, steps: int, device: torch.device) -> float:
    """Images/s of P processes on the device, each training one eager trial, summed."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(p), ctx.Queue()
    workers = [ctx.Process(target=packed_worker, args=(k, width, batch, steps, str(device), barrier, results))
               for k in range(p)]
    for w in workers:
        w.start()
    total = sum(results.get(timeout=600) for _ in workers)
    for w in workers:
        w.join()
    return total


def fused(width: int, batch: int, p: int, steps: int, device: torch.device) -> float:
    """Images/s of P trials fused into one vmapped model, all trials together."""
    torch.manual_seed(0)
    x = torch.rand(batch, 3, 64, 64, device=device)
    models = [ConditionalVAE(64, 64, width).to(device) for _ in range(p)]
    params, buffers = stack_module_state(models)
    template = ConditionalVAE(64, 64, width).to("meta")
    state, groups = AdamWState.like(params), [{"lr": 1e-3, "weight_decay": 0.0}] * p
    xs = x.unsqueeze(0).expand(p, *x.shape).contiguous()
    with autocast(device):
        seconds = timed(lambda: fused_step(template, params, buffers, state, xs, groups), steps, device)
    return p * batch / seconds


def inception(batch: int, steps: int, device: torch.device) -> float:
    """Images/s of the Inception V3 classifier training at 299 px (eager, bf16 on a GPU)."""
    torch.manual_seed(0)
    model = build_classifier("inception_v3", num_outputs=40).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x, y = torch.rand(batch, 3, 299, 299, device=device), torch.randint(0, 2, (batch, 40), device=device)

    def step() -> None:
        loss = classifier_loss(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with autocast(device):
        return batch / timed(step, steps, device)


def busy_share(width: int, batch: int, steps: int, device: torch.device) -> float | None:
    """GPU kernel time / wall time over `steps` steps fed by the real loader (None on the CPU)."""
    if device.type != "cuda":
        return None
    images = np.random.default_rng(0).integers(0, 256, (batch * (steps + 2), 64, 64, 3), dtype=np.uint8)
    loader = BatchLoader(images, None, batch_size=batch, device=device, placement="device", drop_last=True,
                         augment=make_augment("light"))
    raw = ConditionalVAE(64, 64, width).to(device)
    model = torch.compile(raw, mode="reduce-overhead", dynamic=False)
    optimizer = torch.optim.AdamW(raw.parameters(), lr=1e-3)

    def epoch(limit: int) -> None:
        for i, (x, _) in enumerate(loader):
            if i == limit:
                break
            cvae_step(model, optimizer, x, True)

    with autocast(device):
        epoch(3)  # compile and record
        synchronize(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            started = time.perf_counter()
            epoch(steps)
            synchronize(device)
            wall = time.perf_counter() - started
    kernel_us = sum(e.self_device_time_total for e in prof.key_averages())
    return kernel_us / 1e6 / wall


def share_of_peak(flops_per_s: float, device: torch.device, peak: float) -> str:
    return f"{100 * flops_per_s / (peak * 1e12):.2f}%" if device.type == "cuda" else "n/a (CPU)"


def bench(width: int, batch: int, args: argparse.Namespace, device: torch.device) -> list[str]:
    flops = step_flops(ConditionalVAE(64, 64, width).to(device), torch.rand(batch, 3, 64, 64, device=device))

    def row(what: str, images_per_s: float) -> str:
        share = share_of_peak(images_per_s / batch * flops, device, args.peak_tflops)
        return f"| {width} | {batch} | {what} | {images_per_s:,.0f} | {share} |"

    rows = [row("eager, 1 trial", eager_or_compiled(width, batch, args.steps, device, compiled=False))]
    if device.type == "cuda" or args.compile_cpu:
        rows.append(row("compiled, 1 trial", eager_or_compiled(width, batch, args.steps, device, compiled=True)))
    else:
        rows.append(f"| {width} | {batch} | compiled, 1 trial | skipped on the CPU (--compile-cpu) | n/a |")
    rows += [row(f"packed, {p} processes", packed(width, batch, p, args.steps, device)) for p in args.packed]
    rows += [row(f"fused, {p} trials", fused(width, batch, p, args.steps, device)) for p in args.fused]
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--packed", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--fused", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--inception-batch", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, default=790.0, help="the device's bf16 peak (H200: 790)")
    parser.add_argument("--compile-cpu", action="store_true", help="also time torch.compile on the CPU (slow to compile)")
    parser.add_argument("--quick", action="store_true", help="k=8, batch 8, P=2, 2 steps: a test of the script")
    args = parser.parse_args()
    if args.quick:
        args.widths, args.batches, args.packed, args.fused, args.steps, args.inception_batch = [8], [8], [2], [2], 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}, "
          f"{torch.get_num_threads()} threads; images/s counts every trial's images")
    print("| k | batch | step | images/s | % of bf16 peak |\n|---|---|---|---|---|")
    for width in args.widths:
        for batch in args.batches:
            for line in bench(width, batch, args, device):
                print(line, flush=True)
    print(f"\ninception_v3, 299 px, batch {args.inception_batch}: "
          f"{inception(args.inception_batch, max(1, args.steps // 4), device):,.1f} images/s")
    busy = busy_share(32, 256, args.steps, device)
    print("GPU busy (k=32, batch 256, compiled, loader with light augmentation on the device): "
          + (f"{100 * busy:.1f}% of the wall time" if busy is not None else "n/a on the CPU"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
