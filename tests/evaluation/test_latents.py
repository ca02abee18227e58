"""Latent scoring (per-dim table, labels, MIG), its check against true factors, the full review of a
model, and what the training loop reports from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from celeb.evaluation.dimensions import evaluate_dimensions, match_true_factors
from celeb.evaluation.latents import review_latents, score_latents
from celeb.evaluation.traversal import PADDING


def latents_with_known_attributes(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Dims 0 and 1 carry attributes A and B; dim 2 is noise; attribute C is independent of all."""
    rng = np.random.default_rng(seed)
    attrs = rng.random((n, 3)) < 0.4
    mu = rng.normal(size=(n, 3))
    mu[:, 0] += 3 * attrs[:, 0]
    mu[:, 1] -= 3 * attrs[:, 1]
    return mu, attrs, ["A", "B", "C"]


def test_score_latents_labels_the_carrying_dims_and_not_noise():
    mu, attrs, names = latents_with_known_attributes(450)
    constant = np.zeros((450, 1), dtype=bool)  # a constant attribute is left out, not an error
    table, scores = score_latents(mu, np.ones(3), np.hstack([attrs, constant]), names + ["Bald"])
    labels = dict(zip(table["dim"], table["label"]))
    assert "A" in labels[0] and "B" in labels[1] and "unlabelled" in labels[2]
    assert scores["labelled_dims"] == 2 and scores["active_dims"] == 3
    assert 0.2 < scores["mig_fixed"] <= 1.0
    assert "mi_Bald" not in table


def test_noise_gets_no_label_on_a_few_hundred_rows():
    rng = np.random.default_rng(1)
    table, scores = score_latents(rng.normal(size=(300, 8)), np.ones(8), rng.random((300, 37)) < 0.3,
                                  [f"attr{k}" for k in range(37)])
    assert scores["labelled_dims"] == 0, table[["dim", "best_attribute", "best_mi"]]


def test_true_factor_check_accepts_right_labels_and_rejects_wrong_ones():
    rng = np.random.default_rng(2)
    n = 2000
    factors = pd.DataFrame({"hair": rng.integers(0, 3, n), "smile": rng.random(n), "hat": rng.random(n) < 0.3})
    attrs = np.stack([factors["hair"] == 1, factors["smile"] >= 0.5, factors["hat"]], axis=1)
    mu = np.stack([factors["smile"] * 4 + rng.normal(0, 0.1, n),  # dim 0 carries smile
                   (factors["hair"] == 1) * 3 + rng.normal(0, 0.3, n),  # dim 1 carries hair colour
                   rng.normal(size=n)], axis=1)  # dim 2: nothing
    table = evaluate_dimensions(mu, np.ones(3), attrs, ["Blond_Hair", "Smiling", "Wearing_Hat"])
    truth = {"Blond_Hair": "hair", "Smiling": "smile", "Wearing_Hat": "hat"}
    checked = match_true_factors(mu, table, factors, truth).set_index("dim")
    assert checked.loc[0, "true_factor"] == "smile" and checked.loc[0, "label_matches"]
    assert checked.loc[1, "true_factor"] == "hair" and checked.loc[1, "label_matches"]
    wrong = {"Blond_Hair": "hat", "Smiling": "hat", "Wearing_Hat": "hat"}
    assert not match_true_factors(mu, table, factors, wrong)["label_matches"].any()


def test_review_latents_on_a_real_model_gives_every_view():
    from celeb.models import ConditionalVAE
    from celeb.data.schema import ATTRIBUTE_NAMES

    torch.manual_seed(0)
    model = ConditionalVAE(image_size=64, latent_dim=4, width=4, cond_dim=2).eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    labels = rng.random((40, 40)) < 0.5
    review = review_latents(model, images, labels, ATTRIBUTE_NAMES, ["Male", "Smiling"], num_faces=2, steps=3)
    assert set(review.images) == {"traversal", "conditions", "reconstructions", "kl_per_dim"}
    assert len(review.dimensions) == 4 and list(review.dimensions["kl"]) == sorted(review.dimensions["kl"], reverse=True)
    assert not any(c in ("mi_Male", "mi_Smiling") for c in review.dimensions)  # conditioned attributes are not scored
    assert review.images["traversal"].shape[1] == 4 * (64 + PADDING) + PADDING


class Recorder:
    """A tracker that keeps what fit() gave it, by step."""

    def __init__(self) -> None:
        self.metrics: list[dict] = []
        self.images: dict[int, set[str]] = {}
        self.tables: dict[int, pd.DataFrame] = {}

    def log(self, metrics, step):
        self.metrics.append(metrics)

    def log_images(self, images, step):
        self.images.setdefault(step, set()).update(images)

    def log_table(self, name, table, step):
        assert name == "dimensions"
        self.tables[step] = table

    def finish(self):
        pass


def test_fit_reports_mig_every_epoch_and_panels_every_panel_every_evaluations():
    from celeb.config import config_from_dict
    from celeb.data.dataset import CelebData
    from celeb.training.loop import fit

    rng = np.random.default_rng(0)
    labels = rng.random((60, 40)) < 0.4
    images = np.where(labels[:, :3][:, None, None, :], 200, 40).astype(np.uint8).repeat(64, 1).repeat(64, 2)
    data = CelebData(images, labels, np.array(["train"] * 40 + ["val"] * 20))
    config = config_from_dict({"task": "cvae", "device": "cpu", "epochs": 3, "batch_size": 16, "num_recon": 2,
                               "cvae.width": 4, "cvae.latent_dim": 3, "cvae.conditions": ["Male"],
                               "cvae.panel_every": 2, "cvae.panel_faces": 2, "cvae.panel_steps": 3})
    recorder = Recorder()
    fit(config, data, tracker=recorder)
    assert all(0.0 <= m["val/mig_fixed"] <= 1.0 and "val/labelled_dims" in m for m in recorder.metrics)
    by_epoch = [recorder.images[m["step"]] for m in recorder.metrics]
    assert by_epoch[0] == {"reconstructions"}  # epoch 1: not a panel epoch
    assert by_epoch[1] == by_epoch[2] == {"reconstructions", "traversal", "kl_per_dim", "conditions"}  # 2, and last
    table = recorder.tables[recorder.metrics[-1]["step"]]
    assert len(table) == 3 and {"dim", "label", "kl", "active", "best_attribute", "best_mi"} <= set(table)
    assert "Male" not in set(table["best_attribute"])  # the condition is not a latent's label


def test_final_metrics_come_once_after_the_last_epoch_when_asked():
    from celeb.config import config_from_dict
    from celeb.data.dataset import CelebData
    from celeb.training.loop import fit

    rng = np.random.default_rng(1)
    labels = rng.random((100, 40)) < 0.4
    images = np.where(labels[:, :3][:, None, None, :], 200, 40).astype(np.uint8).repeat(64, 1).repeat(64, 2)
    data = CelebData(images, labels, np.array(["train"] * 40 + ["val"] * 60))
    base = {"task": "cvae", "device": "cpu", "epochs": 2, "batch_size": 20, "num_recon": 0, "cvae.width": 4,
            "cvae.latent_dim": 3, "cvae.conditions": ["Male"], "cvae.panel_every": 0}
    history = fit(config_from_dict({**base, "cvae.final_metrics": True}), data).history
    final = {"val/dci_disentanglement_fixed", "val/sap_fixed", "val/beta_vae_approx", "val/factor_vae_approx"}
    assert final <= set(history[-1]) and not final & set(history[0])
    assert all(0.0 <= history[-1][k] <= 1.0 for k in final)
    assert not final & set(fit(config_from_dict(base), data).history[-1])  # off by default
