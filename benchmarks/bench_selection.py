"""Does choosing β by weak labels pick the β the truth would? A β sweep on synthetic faces, checked.

    PYTHONPATH=. python benchmarks/bench_selection.py [--n 4000] [--epochs 8] [--betas 0.25 0.5 1 2 4 8 16]
        [--seeds 0 1 2] [--out benchmarks/out/selection]

The seed's principle: choose β by a disentanglement score computed with weak labels (CelebA's
attributes). On the synthetic faces every generative factor is known, so the principle can be
checked. One CVAE (64 latents, conditioned on Male and Smiling) is trained per β and seed with
`fit`; each final model encodes the same val faces, and its latents are scored twice:

- weak-label scores, the fixed setting against the attributes only (those the model is not
  conditioned on; celeb.evaluation.latents.fixed_metrics): mig_fixed, dci_*_fixed (fast
  estimator), sap_fixed, beta_vae_approx, factor_vae_approx;
- exact scores against all true factors (factors.parquet, continuous ones in 5 quantile bins;
  the factors behind the conditioned attributes left out, as their information reaches the
  decoder through the condition): MIG and DCI disentanglement/completeness.

Printed: the Spearman rank correlation of each weak score with each exact score across all
checkpoints; the β each score chooses (best mean over seeds); and the regret of each weak choice,
(exact score of the best β - exact score of the chosen β) / exact score of the best β, per exact
score. Goal: a weak score with Spearman >= 0.8 against exact MIG or DCI and regret <= 5%.
Trained models are kept in `--out` (a finished β and seed is not trained again).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from celeb.config import config_from_dict  # noqa: E402
from celeb.data.dataset import load_data  # noqa: E402
from celeb.evaluation.disentanglement.dci import dci_scores  # noqa: E402
from celeb.evaluation.disentanglement.fixed_data import split_rows  # noqa: E402
from celeb.evaluation.disentanglement.ground_truth import factor_codes  # noqa: E402
from celeb.evaluation.disentanglement.mig import mutual_information_gap  # noqa: E402
from celeb.evaluation.latents import fixed_metrics  # noqa: E402
from celeb.evaluation.traversal import encode_images  # noqa: E402
from celeb.review.latents import eval_images  # noqa: E402
from celeb.synth import ATTRIBUTE_FACTORS, FACTOR_NAMES  # noqa: E402
from celeb.training.loop import fit  # noqa: E402
from synthetic import make_data  # noqa: E402  (this folder)

CONDITIONS = ["Male", "Smiling"]
COMMON = {"batch_size": 64, "lr": 2e-3, "lr_warmup_epochs": 0.2, "grad_clip": 200.0, "num_recon": 0,
          "data.augment": "none", "cvae.latent_dim": 64, "cvae.width": 16, "cvae.warmup_epochs": 1.0,
          "cvae.conditions": CONDITIONS, "cvae.panel_every": 0, "device": "cpu"}
WEAK = ("mig_fixed", "dci_disentanglement_fixed", "dci_completeness_fixed", "sap_fixed", "beta_vae_approx",
        "factor_vae_approx")
EXACT = ("mig_true", "dci_disentanglement_true", "dci_completeness_true")


def exact_scores(mu: np.ndarray, codes: np.ndarray, seed: int) -> dict[str, float]:
    """MIG and DCI of the latents against integer codes of all true factors (no re-rendering: the
    val faces' factors are i.i.d. draws, as the synthetic protocols' samples are)."""
    varying = np.array([len(np.unique(c)) > 1 for c in codes.T])
    codes = codes[:, varying]
    train, test = split_rows(len(mu), seed, num_train=len(mu), num_test=len(mu) // 3)
    dci = dci_scores(mu[train], codes[train], mu[test], codes[test], seed, "hist", balanced=False, progress=False,
                     suffix="_true")
    return {"mig_true": float(mutual_information_gap(mu, codes).mean()),
            "dci_disentanglement_true": dci["dci_disentanglement_true"],
            "dci_completeness_true": dci["dci_completeness_true"]}


def train_and_score(beta: float, seed: int, data, data_dir: Path, epochs: int, eval_set, out: Path) -> dict:
    """One trained β and seed, scored both ways (cached in out/n{N}_e{E}_beta_{B}_seed_{S}.json)."""
    path = out / f"n{len(data.labels)}_e{epochs}_beta_{beta:g}_seed_{seed}.json"
    if path.exists():
        return json.loads(path.read_text())
    config = config_from_dict({**COMMON, "epochs": epochs, "cvae.beta": beta, "seed": seed,
                               "data.data_dir": str(data_dir)})
    started = time.perf_counter()
    model = fit(config, data).model
    train_s = time.perf_counter() - started
    names = list(eval_set.attribute_names)
    cond_index = [names.index(c) for c in CONDITIONS]
    with torch.no_grad():
        mu, _ = encode_images(model, eval_set.images, eval_set.labels, cond_index)
    free = [k for k in range(len(names)) if k not in cond_index]
    weak, note = fixed_metrics(mu, eval_set.labels[:, free], [names[k] for k in free], seed=0)
    if note:
        raise RuntimeError(f"β {beta:g}, seed {seed}: {note}")
    conditioned = {ATTRIBUTE_FACTORS[c] for c in CONDITIONS}
    factors = [f for f in FACTOR_NAMES if f not in conditioned]
    row = {"beta": beta, "seed": seed, "train_s": train_s, **{k: weak[k] for k in WEAK},
           **exact_scores(mu, factor_codes(eval_set.true_factors, factors), seed=0)}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row))
    tmp.replace(path)
    print(f"β {beta:g} seed {seed}: {train_s:.0f} s, mig_fixed {row['mig_fixed']:.3f}, "
          f"mig_true {row['mig_true']:.3f}, dci_true {row['dci_disentanglement_true']:.3f}", flush=True)
    return row


def chosen_beta(table: pd.DataFrame, score: str) -> float:
    """The β whose mean score over seeds is highest."""
    return float(table.groupby("beta")[score].mean().idxmax())


def report(table: pd.DataFrame) -> None:
    print(f"\n{len(table)} checkpoints: β {', '.join(f'{b:g}' for b in sorted(table['beta'].unique()))} "
          f"x {table['seed'].nunique()} seeds\n")
    ranks = table[list(WEAK + EXACT)].rank()  # Spearman = Pearson of ranks
    print("Spearman across checkpoints | " + " | ".join(EXACT) + " |")
    print("|---|" + "---|" * len(EXACT))
    for weak in WEAK:
        print(f"| {weak} | " + " | ".join(f"{ranks[weak].corr(ranks[e]):+.2f}" for e in EXACT) + " |")
    means = table.groupby("beta")[list(EXACT)].mean()
    print("\n| score | chosen β | " + " | ".join(f"regret on {e}" for e in EXACT) + " |")
    print("|---|---|" + "---|" * len(EXACT))
    for score in WEAK + EXACT:
        beta = chosen_beta(table, score)
        regrets = [(means[e].max() - means.loc[beta, e]) / abs(means[e].max()) for e in EXACT]
        print(f"| {score} | {beta:g} | " + " | ".join(f"{100 * r:.1f}%" for r in regrets) + " |")
    print("\nmean over seeds per β:")
    print(table.groupby("beta")[list(WEAK + EXACT)].mean().round(3).to_string())
    print(f"\ntraining: {statistics.mean(table['train_s']):.0f} s per checkpoint on average")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=4000, help="synthetic faces (default 4000)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-images", type=int, default=2000, help="val faces scored (default 2000)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/out/selection"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    args.out.mkdir(parents=True, exist_ok=True)
    data_dir = make_data(args.out, args.n)
    data = load_data(data_dir)
    config = config_from_dict({**COMMON, "data.data_dir": str(data_dir)})
    eval_set = eval_images(config, data_dir, args.eval_images)
    rows = [train_and_score(beta, seed, data, data_dir, args.epochs, eval_set, args.out)
            for beta in args.betas for seed in args.seeds]
    table = pd.DataFrame(rows)
    report(table)
    table.to_csv(args.out / "scores.csv", index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
