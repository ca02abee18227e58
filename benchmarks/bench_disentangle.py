"""How long the disentanglement metrics take at disentanglement_lib's defaults, per metric, on the CPU.

    PYTHONPATH=. python benchmarks/bench_disentangle.py                 # D=64, K=10, both DCI estimators
    PYTHONPATH=. python benchmarks/bench_disentangle.py --dci hist      # skip the slow faithful DCI
    PYTHONPATH=. python benchmarks/bench_disentangle.py --num-train 2000 --num-eval 1000

The representation is cheap (numpy), so the figures are the metrics' own cost: 10 latent dims carry
the factors (with noise), 30 are noise and 24 are collapsed (std 0.01, pruned by FactorVAE). The
synthetic setting uses a grid of 10 factors (7 binary, 3 with 4 values, like binned continuous
factors); the fixed setting uses 15,000 rows and 10 binary attributes at CelebA's prevalences.
Also times evaluate_dimensions on 20,000 x 64 latents against all 40 attributes.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from celeb.data.schema import ATTRIBUTE_NAMES, CELEBA_PREVALENCE
from celeb.evaluation.dimensions import evaluate_dimensions, label_dimensions
from celeb.evaluation.disentanglement.beta_vae import beta_vae_approx, beta_vae_score
from celeb.evaluation.disentanglement.dci import dci_fixed, dci_synthetic
from celeb.evaluation.disentanglement.factor_vae import factor_vae_approx, factor_vae_score
from celeb.evaluation.disentanglement.ground_truth import grid_ground_truth
from celeb.evaluation.disentanglement.mig import mig_fixed, mig_synthetic
from celeb.evaluation.disentanglement.sap import sap_fixed, sap_synthetic

FIXED_ATTRIBUTES = ("Smiling", "Male", "Eyeglasses", "Blond_Hair", "Wearing_Hat", "Bangs", "Black_Hair",
                    "Wavy_Hair", "No_Beard", "Pale_Skin")


def latents_from(codes: np.ndarray, rng: np.random.Generator, dims: int = 64) -> np.ndarray:
    n, k = codes.shape
    z = np.empty((n, dims))
    z[:, :k] = codes + 0.1 * rng.standard_normal((n, k))
    z[:, k:40] = rng.standard_normal((n, 40 - k))
    z[:, 40:] = 0.01 * rng.standard_normal((n, dims - 40))
    return z


def timed(label: str, run) -> dict[str, float]:
    start = time.perf_counter()
    scores = run()
    seconds = time.perf_counter() - start
    shown = ", ".join(f"{k}={v:.3f}" for k, v in scores.items() if not k.endswith(("_train", "_dims")))
    print(f"  {label:<24s} {seconds:7.1f} s   {shown}", flush=True)
    return {label: seconds}


def bench_synthetic(args: argparse.Namespace) -> None:
    sizes = (2,) * 7 + (4,) * 3
    gt = grid_ground_truth(sizes)
    rng = np.random.default_rng(0)

    def represent(x: np.ndarray) -> np.ndarray:
        return latents_from(x * 3, rng)

    n, e = args.num_train, args.num_eval
    print(f"synthetic (exact protocols): K={len(sizes)} factors {sizes}, D=64, num_train={n}, num_eval={e}")
    times: dict[str, float] = {}
    times |= timed("beta_vae", lambda: beta_vae_score(represent, gt, 0, n, e, progress=False))
    times |= timed("factor_vae", lambda: factor_vae_score(represent, gt, 0, n, e, progress=False))
    times |= timed("mig", lambda: mig_synthetic(represent, gt, 0, n, progress=False))
    for estimator in args.dci:
        run = lambda: dci_synthetic(represent, gt, 0, n, e, estimator, progress=False)  # noqa: E731
        times |= timed(f"dci ({estimator})", run)
    times |= timed("sap", lambda: sap_synthetic(represent, gt, 0, n, e, progress=False))
    summarise(times, args.dci)


def bench_fixed(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1)
    rows = args.num_train + args.num_eval
    prevalence = np.array([CELEBA_PREVALENCE[a] for a in FIXED_ATTRIBUTES])
    attributes = rng.random((rows, len(prevalence))) < prevalence
    latents = latents_from(attributes.astype(float) * 3, rng)
    n, e = args.num_train, args.num_eval
    print(f"fixed (arrays): {rows} rows, K={len(prevalence)} binary attributes at CelebA prevalences, D=64")
    times: dict[str, float] = {}
    times |= timed("beta_vae_approx", lambda: beta_vae_approx(latents, attributes, 0, n, e))
    times |= timed("factor_vae_approx", lambda: factor_vae_approx(latents, attributes, 0, n, e))
    times |= timed("mig_fixed", lambda: mig_fixed(latents, attributes))
    for estimator in args.dci:
        run = lambda: dci_fixed(latents, attributes, 0, n, e, estimator, progress=False)  # noqa: E731
        times |= timed(f"dci ({estimator})", run)
    times |= timed("sap_fixed", lambda: sap_fixed(latents, attributes, 0, n, e, progress=False))
    summarise(times, args.dci)


def bench_dimensions() -> None:
    rng = np.random.default_rng(2)
    attributes = rng.random((20_000, 40)) < np.array([CELEBA_PREVALENCE[a] for a in ATTRIBUTE_NAMES])
    mu = latents_from(attributes[:, :10].astype(float) * 3, rng)
    logvar = np.where(np.arange(64) < 40, -2.0, 0.0) + 0.1 * rng.standard_normal(mu.shape)
    start = time.perf_counter()
    table = evaluate_dimensions(mu, logvar, attributes, ATTRIBUTE_NAMES)
    labels = label_dimensions(table)
    print(f"dimensions: evaluate_dimensions + label_dimensions, 20000 x 64 vs 40 attributes: "
          f"{time.perf_counter() - start:.2f} s; first labels: {labels[:3]}")


def summarise(times: dict[str, float], estimators: list[str]) -> None:
    for estimator in estimators:
        total = sum(v for k, v in times.items() if not k.startswith("dci") or k == f"dci ({estimator})")
        print(f"  {'total with dci (' + estimator + ')':<24s} {total:7.1f} s")
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-train", type=int, default=10_000)
    parser.add_argument("--num-eval", type=int, default=5_000)
    parser.add_argument("--dci", default="gbt,hist", help="comma-separated DCI estimators to time (gbt, hist)")
    parser.add_argument("--setting", default="synthetic,fixed,dimensions")
    args = parser.parse_args()
    args.dci = [e for e in args.dci.split(",") if e]
    settings = args.setting.split(",")
    load = os.getloadavg()[0]
    print(f"CPU: {os.cpu_count()} cores, load average {load:.1f} at start; sklearn runs single-threaded\n")
    if "synthetic" in settings:
        bench_synthetic(args)
    if "fixed" in settings:
        bench_fixed(args)
    if "dimensions" in settings:
        bench_dimensions()


if __name__ == "__main__":
    main()
