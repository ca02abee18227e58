"""Latent traversal panels, condition panels, reconstruction panels and the KL chart, on a toy decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from celeb.evaluation.traversal import (PADDING, condition_panel, kl_bar_chart, kl_order, reconstruction_panel,
                                        sweep_values, traversal_panel, with_row_labels)

SIZE = 8  # a tiny "image" size for the toy decoder


class ToyVAE(nn.Module):
    """Decodes z into an image whose pixels depend only on the dims in `used` (and the condition)."""

    def __init__(self, latent_dim: int = 4, used: tuple[int, ...] = (2, 0), cond_dim: int = 1) -> None:
        super().__init__()
        self.latent_dim, self.used, self.cond_dim = latent_dim, used, cond_dim
        self.dummy = nn.Parameter(torch.zeros(1))

    def encode(self, x: torch.Tensor, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        mu = x.mean(dim=(2, 3))[:, :1].repeat(1, self.latent_dim) * torch.arange(1, self.latent_dim + 1)
        return mu, torch.zeros_like(mu)

    def decode(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        logits = torch.zeros(len(z), 3, SIZE, SIZE)
        for channel, d in enumerate(self.used):
            logits[:, channel] += z[:, d, None, None]
        if cond is not None:
            logits[:, 2] += 4 * cond[:, 0, None, None]
        return logits

    def decode_images(self, z: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return torch.sigmoid(self.decode(z, cond))

    def reconstruct(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode_images(self.encode(x, cond)[0], cond)


def rows_of(panel: torch.Tensor, num_rows: int, num_cols: int, label_width: int) -> list[list[torch.Tensor]]:
    """Cut a labelled make_grid panel back into its cells."""
    grid = panel[:, :, label_width:]
    cell = SIZE + PADDING
    return [[grid[:, PADDING + r * cell: PADDING + r * cell + SIZE, PADDING + c * cell: PADDING + c * cell + SIZE]
             for c in range(num_cols)] for r in range(num_rows)]


def label_width_of(panel: torch.Tensor, num_cols: int) -> int:
    return panel.shape[2] - (num_cols * (SIZE + PADDING) + PADDING)


def test_traversal_rows_follow_kl_and_only_used_dims_change_the_image():
    model, refs, steps = ToyVAE(), torch.rand(2, 3, SIZE, SIZE), 5
    kl = np.array([0.5, 0.0, 2.0, 0.005])  # dim 2 first, then 0; dims 1 and 3 inactive
    values = np.tile(np.linspace(-3, 3, steps), (4, 1))
    panel = traversal_panel(model, refs, torch.ones(2, 1), values, kl)
    cols = 2 * steps
    cells = rows_of(panel, 4, cols, label_width_of(panel, cols))
    assert list(kl_order(kl)) == [2, 0, 3, 1]
    varies = [not torch.allclose(row[0], row[steps - 1]) for row in cells]
    assert varies == [True, True, False, False]  # rows 0, 1 are dims 2 and 0: the ones the decoder uses
    # dim 2 drives channel 0, dim 0 channel 1: each row changes only its own channel
    assert not torch.allclose(cells[0][0][0], cells[0][steps - 1][0]) and torch.allclose(cells[0][0][1], cells[0][steps - 1][1])
    assert not torch.allclose(cells[1][0][1], cells[1][steps - 1][1]) and torch.allclose(cells[1][0][0], cells[1][steps - 1][0])
    # inactive rows are greyed: their contrast is squeezed towards grey
    assert cells[2][0].std() < cells[0][0].std() + 1e-6 and (cells[3][0] - 0.52).abs().max() < 0.36
    # left out on request
    active_only = traversal_panel(model, refs, torch.ones(2, 1), values, kl, include_inactive=False)
    assert len(rows_of(active_only, 2, cols, label_width_of(active_only, cols))) == 2
    assert active_only.shape[1] == 2 * (SIZE + PADDING) + PADDING


def test_row_labels_are_drawn_in_a_white_margin():
    grid = torch.zeros(3, 2 * (SIZE + PADDING) + PADDING, 40)
    labelled = with_row_labels(grid, ["dim 16 ↔ Blond_Hair (MI 0.31)", "dim 3: inactive"])
    margin = labelled[:, :, : labelled.shape[2] - 40]
    assert margin.shape[2] > 30 and torch.equal(labelled[:, :, -40:], grid)
    assert (margin < 0.5).any() and (margin > 0.99).float().mean() > 0.5  # dark text on white


def test_condition_panel_changes_only_with_the_condition():
    model, refs, steps = ToyVAE(), torch.rand(2, 3, SIZE, SIZE), 4
    panel = condition_panel(model, refs, torch.zeros(2, 1), ["Smiling"], steps=steps)
    cells = rows_of(panel, 1, 2 * steps, label_width_of(panel, 2 * steps))[0]
    assert cells[steps - 1][2].mean() > cells[0][2].mean() + 0.3  # cond drives channel 2, off -> on
    assert torch.allclose(cells[0][:2], cells[steps - 1][:2])
    unconditional = condition_panel(ToyVAE(cond_dim=0), refs, None, [])
    assert unconditional.shape[0] == 3  # a blank panel that says why


def test_reconstruction_panel_puts_originals_above_reconstructions():
    model, refs = ToyVAE(), torch.rand(3, 3, SIZE, SIZE)
    panel = reconstruction_panel(model, refs, torch.ones(3, 1))
    top = panel[:, PADDING:PADDING + SIZE, PADDING:PADDING + SIZE]
    assert torch.allclose(top, refs[0], atol=1e-6)
    assert panel.shape == (3, 2 * (SIZE + PADDING) + PADDING, 3 * (SIZE + PADDING) + PADDING)


def test_sweep_values_span_the_aggregate_posterior():
    rng = np.random.default_rng(0)
    mu = rng.normal(2.0, 0.5, size=(4000, 2))
    logvar = np.log(np.full((4000, 2), 0.75))
    values = sweep_values(mu, logvar, steps=7, span=3.0)
    assert values.shape == (2, 7)
    assert values[:, 3] == pytest.approx(mu.mean(axis=0))
    assert values[:, -1] - values[:, 3] == pytest.approx(3 * np.sqrt(mu.var(axis=0) + 0.75))


def test_kl_bar_chart_is_an_rgb_image():
    chart = kl_bar_chart(np.array([0.0, 1.0, 0.3]))
    assert chart.dtype == np.uint8 and chart.ndim == 3 and chart.shape[2] == 3
    assert chart.min() < 100 and chart.max() == 255
