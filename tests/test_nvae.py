"""The hierarchical VAE (celeb.models.hvae, task nvae): its likelihood, KL and spectral oracles, its
objective's balancing, and the same commands as the CVAE (train, traverse) with NVAE's fixes named
when training diverges."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch.distributions import Normal, kl_divergence

from celeb.config import config_from_dict
from celeb.models import build_model
from celeb.models.hvae import HierarchicalVAE, gaussian_kl, hvae_loss
from celeb.models.likelihood import bits_per_dim, discretized_logistic_log_prob, reconstruction_nll
from celeb.review.export import load_model
from celeb.training.loop import NonFiniteLossError, fit

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_the_discretised_logistic_is_a_distribution_over_the_256_levels():
    levels = torch.arange(256, dtype=torch.float32) / 255
    x = levels.view(1, 1, 16, 16).expand(1, 3, 16, 16)  # every level once per channel
    for mean, log_scale in ((0.0, -2.0), (0.7, -4.5), (-0.95, -1.0), (0.3, -7.0)):
        params = torch.cat([torch.full((1, 3, 16, 16), mean), torch.full((1, 3, 16, 16), log_scale)], dim=1)
        total = discretized_logistic_log_prob(params, x).exp().sum(dim=(2, 3))
        assert torch.allclose(total, torch.ones_like(total), atol=2e-3), (mean, log_scale, total)


def test_bits_per_dim_are_nats_per_sub_pixel_in_base_two():
    assert bits_per_dim(3 * 64 * 64 * math.log(2) * 2.5, (3, 64, 64)) == pytest.approx(2.5)
    x = torch.rand(2, 3, 8, 8).mul(255).round().div(255)
    sharp = torch.cat([2 * x - 1, torch.full_like(x, -7.0)], dim=1)  # all mass on the right level: ~0 bits
    assert bits_per_dim(float(reconstruction_nll(sharp, x, "logistic").mean()), (3, 8, 8)) < 0.05
    wrong = torch.cat([1 - 2 * x, torch.full_like(x, -7.0)], dim=1)  # sure of the mirrored level: many bits
    assert bits_per_dim(float(reconstruction_nll(wrong, x, "logistic").mean()), (3, 8, 8)) > 20


def test_group_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    q = (torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g) * 0.5)
    p = (torch.randn(4, 2, 3, 3, generator=g), torch.randn(4, 2, 3, 3, generator=g) * 0.5)
    expected = kl_divergence(Normal(q[0], q[1].exp()), Normal(p[0], p[1].exp())).flatten(1).sum(1)
    assert torch.allclose(gaussian_kl(q, p), expected, rtol=1e-5)


def test_the_residual_posterior_starts_at_the_prior_and_noise_shapes_match_the_groups():
    torch.manual_seed(0)
    model = HierarchicalVAE(64, latent_dim=6, width=4, cond_dim=2, scales=2, groups=2, latent_channels=3)
    out = model(torch.rand(3, 3, 64, 64), torch.ones(3, 2), generator=torch.Generator().manual_seed(1))
    assert out.kl_groups.shape == (3, 4) and torch.all(out.kl_groups == 0)  # q = p for every lower group
    assert model.noise_shapes(3) == [(3, 6), (3, 3, 8, 8), (3, 3, 8, 8), (3, 3, 16, 16), (3, 3, 16, 16)]
    assert model.group_sizes() == [6, 192, 192, 768, 768] and model.num_groups == 5
    assert model.decode_images(torch.zeros(2, 6), torch.ones(2, 2)).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match=r"scales must be 1\.\.3 at 64 px"):
        HierarchicalVAE(64, scales=4)


def test_a_group_traversal_moves_one_group_and_its_middle_is_the_reconstruction():
    torch.manual_seed(0)
    model = HierarchicalVAE(64, latent_dim=4, width=4, scales=2, groups=1, latent_channels=2, recon="logistic")
    for p in model.parameters():  # make the posterior depend on the image (it starts equal to the prior)
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.rand(2, 3, 64, 64)
    images = model.traverse_group(x, None, group=1, steps=3, span=2.0).view(2, 2, 3, 3, 64, 64)  # ch, face, step
    recon = model.reconstruct(x)
    for channel in range(2):
        assert torch.allclose(images[channel, :, 1], recon, atol=1e-6)  # δ = 0: every group at its posterior mean
        assert not torch.allclose(images[channel, :, 0], images[channel, :, 2])  # ±2σ look different


def test_the_importance_sampled_nll_is_at_most_the_elbo_and_tightens_with_samples():
    torch.manual_seed(0)
    model = HierarchicalVAE(64, latent_dim=4, width=4, scales=1, groups=1, latent_channels=2, recon="logistic")
    for p in model.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    x = torch.rand(3, 3, 64, 64).mul(255).round().div(255)
    with torch.no_grad():
        parts = [hvae_loss(model(x, generator=torch.Generator().manual_seed(s)), x, 1.0, 0.0, "logistic",
                           model.group_sizes(), False) for s in range(64)]
    neg_elbo = float(sum(p.recon + p.kl for p in parts) / len(parts))
    # one sample: an unbiased estimate of the negative ELBO; many: a bound at most as large
    one = torch.stack([model.importance_nll(x, None, 1, torch.Generator().manual_seed(s)) for s in range(64)]).mean()
    many = model.importance_nll(x, None, 64, torch.Generator().manual_seed(0)).mean()
    assert float(one) == pytest.approx(neg_elbo, rel=2e-3)
    assert float(many) <= float(one)


def test_power_iteration_finds_each_weights_largest_singular_value():
    torch.manual_seed(0)
    model = HierarchicalVAE(64, latent_dim=4, width=4, scales=1, groups=1, latent_channels=2)
    with torch.no_grad():
        for _ in range(200):
            estimate = model.spectral_loss()
        exact = sum(torch.linalg.matrix_norm(m.weight.flatten(1), ord=2) for m in model._spectral_layers())
    assert float(estimate) == pytest.approx(float(exact), rel=1e-3)


def test_kl_balancing_reweights_groups_only_and_keeps_the_total_kl():
    torch.manual_seed(0)
    model = HierarchicalVAE(64, latent_dim=4, width=4, scales=1, groups=2, latent_channels=2, recon="logistic")
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        out = model(x, generator=torch.Generator().manual_seed(0))
    out = out._replace(kl_groups=out.kl_groups + torch.tensor([[1.0, 50.0]]))  # two very unequal groups
    plain = hvae_loss(out, x, 0.5, 0.0, "logistic", model.group_sizes(), balance=False)
    balanced = hvae_loss(out, x, 0.5, 0.0, "logistic", model.group_sizes(), balance=True)
    assert torch.equal(plain.kl, balanced.kl) and torch.equal(plain.recon, balanced.recon)
    assert plain.total == pytest.approx(float(plain.recon + 0.5 * plain.kl))
    assert float(balanced.total) != pytest.approx(float(plain.total))


def test_celeb_train_nvae_learns_reports_bits_per_dim_and_traverses(synthetic_data, tmp_path, capsys):
    from celeb.cli import main

    run_dir = tmp_path / "run"
    assert main(["train", "nvae", str(REPO / "configs" / "nvae_debug.yaml"), "--run-dir", str(run_dir),
                 "--set", f"data.data_dir={synthetic_data}", "--set", "epochs=3", "--set", "batch_size=16",
                 "--set", "cvae.width=4", "--set", "cvae.latent_dim=6", "--set", "nvae.latent_channels=2",
                 "--set", "max_train_batches=6", "--set", "device=cpu", "--set", "nvae.iw_samples=4"]) == 0
    summary = json.loads((run_dir / "metrics.json").read_text())
    first, last = summary["history"][0], summary["final"]
    assert "val/iw_bits_per_dim" in last and "val/iw_bits_per_dim" not in first  # after the last epoch only
    assert last["val/iw_bits_per_dim"] < last["val/bits_per_dim"] + 0.01
    assert last["val/bits_per_dim"] < min(first["val/bits_per_dim"], 8.4)  # it learns
    assert last["val/kl"] == pytest.approx(sum(last[f"val/kl_group_{g}"] for g in range(5)), rel=1e-4)
    for name in ("reconstructions.png", "traversal.png", "dimensions.csv"):
        assert (run_dir / name).is_file(), name
    checkpoint = Path(summary["last_checkpoint"])
    assert main(["traverse", str(checkpoint), "--faces", "2", "--steps", "3", "--group", "4"]) == 0
    printed = capsys.readouterr().out
    assert "of 6 latent dims active" in printed
    assert Image.open(checkpoint / "traverse" / "traversal.png").height == 2 + 6 * 66  # a row per top dim
    group = Image.open(checkpoint / "traverse" / "group_4.png")
    assert group.height == 2 + 2 * 66 and group.width > 2 * 3 * 66  # a row per channel, 2 faces x 3 steps
    assert main(["traverse", str(checkpoint), "--group", "5"]) == 2  # 4 lower groups: 1..4

    # reviewed and exported like a CVAE run: ranked by bits/dim, a card with panels, one exported file
    page, exported = tmp_path / "page", tmp_path / "best.pt"
    assert main(["review", str(tmp_path), "--metric", "val/bits_per_dim", "--top", "1", "--out", str(page),
                 "--export", str(exported)]) == 0
    html = (page / "review.html").read_text()
    assert html.count('<article class="card"') == 1 and 'data-panel="traversal"' in html
    loaded = load_model(exported)
    assert loaded.task == "nvae" and isinstance(loaded.model, HierarchicalVAE) and not loaded.model.training
    x = torch.rand(2, 3, 64, 64)
    cond = torch.ones(2, 3)
    with torch.no_grad():
        assert torch.equal(loaded.model.reconstruct(x, cond), load_model(checkpoint).model.reconstruct(x, cond))


def test_a_diverged_nvae_names_nvaes_fixes(synthetic_data):
    from celeb.data.dataset import load_data

    config = config_from_dict({"task": "nvae", "device": "cpu", "epochs": 1, "batch_size": 16, "lr": 1e6,
                               "max_train_batches": 4, "num_recon": 0, "cvae.width": 4, "cvae.latent_dim": 4,
                               "cvae.panel_every": 0, "data.data_dir": str(synthetic_data)})
    with pytest.raises(NonFiniteLossError, match=r"Raise the spectral regulariser \(nvae\.spectral"):
        fit(config, load_data(synthetic_data))


def test_the_builder_makes_the_configs_hierarchy_and_sizes_span_cpu_to_gpu():
    small = build_model(config_from_dict({"task": "nvae", "cvae.width": 8, "cvae.latent_dim": 8}))
    large = build_model(config_from_dict({"task": "nvae", "cvae.width": 128, "nvae.cells": 2, "nvae.scales": 3,
                                          "nvae.groups": 4, "nvae.latent_channels": 20}))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert isinstance(small, HierarchicalVAE) and count(small) < 500_000 and count(large) > 10_000_000


def test_a_sweep_ranked_by_bits_per_dim_needs_the_logistic_likelihood(tmp_path):
    from celeb.sweep.spec import SweepSpecError, load_spec

    spec = (REPO / "sweeps" / "nvae.yaml").read_text()
    assert load_spec(REPO / "sweeps" / "nvae.yaml").metric == "val/bits_per_dim"
    path = tmp_path / "bce.yaml"
    path.write_text(spec.replace("recon: logistic", "recon: bce"))
    with pytest.raises(SweepSpecError, match=r"only with the discretised logistic"):
        load_spec(path)
