"""What a trained conditional VAE's latents do, as pictures a reviewer reads at a glance.

- `traversal_panel`: one row per latent dim, most used (highest KL) first. Each row decodes a few
  reference faces with that one dim swept from −span·σ to +span·σ around the data's mean, where σ
  is the std of the aggregate posterior of that dim on the encoded images (≈ 1 for a dim that
  matches the prior). Inactive dims (KL below a threshold) are greyed out, or left out.
- `condition_panel`: one row per condition attribute, swept from 0 (off) to 1 (on) over the same
  faces, every other input held fixed.
- `reconstruction_panel`: originals above their reconstructions.
- `kl_bar_chart`: the per-dim KL as a bar chart.
- `latent_panels`: the traversal, condition and KL views of one model at once, which the training
  loop and `celeb.evaluation.latents.review_latents` (behind `celeb review` and `celeb traverse`)
  share, so they show the same views.

Panels are torchvision `make_grid` images, float (3, H, W) in [0, 1], with the row labels drawn
in a white margin on their left.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor, nn
from torchvision.utils import make_grid

ACTIVE_DIM_NATS = 0.01  # a latent dim is "active" when its mean KL on the evaluated images exceeds this
PADDING = 2


# ----------------------------------------------------------------------------- encoding


@torch.no_grad()
def encode_images(model: nn.Module, images: np.ndarray, labels: np.ndarray, cond_index: Sequence[int],
                  batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances (N, D) of uint8 images (N, H, W, 3) with labels (N, 40)."""
    device = next(model.parameters()).device
    mus, logvars = [], []
    for start in range(0, len(images), batch_size):
        x = images_as_tensor(images[start:start + batch_size], device)
        cond = conditions_of(labels[start:start + batch_size], cond_index, device)
        mu, logvar = model.encode(x, cond)
        mus.append(mu.float().cpu())
        logvars.append(logvar.float().cpu())
    return torch.cat(mus).numpy(), torch.cat(logvars).numpy()


def images_as_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).to(device).permute(0, 3, 1, 2).float().div(255.0)


def conditions_of(labels: np.ndarray, cond_index: Sequence[int], device: torch.device | str = "cpu") -> Tensor | None:
    """The condition vector (N, C) as floats, or None for an unconditional model."""
    if len(cond_index) == 0:
        return None
    return torch.as_tensor(np.asarray(labels)[:, list(cond_index)], dtype=torch.float32, device=device)


def kl_order(kl_per_dim: np.ndarray) -> np.ndarray:
    """Dims by KL, highest first (ties by dim number)."""
    kl = np.asarray(kl_per_dim, dtype=np.float64)
    return np.lexsort((np.arange(len(kl)), -kl))


def sweep_values(mu: np.ndarray, logvar: np.ndarray, steps: int = 7, span: float = 3.0) -> np.ndarray:
    """(D, steps) values per dim: mean ± span·σ of the aggregate posterior (mixture of the q(z|x))."""
    centre = mu.mean(axis=0)
    sigma = np.sqrt(mu.var(axis=0) + np.exp(logvar).mean(axis=0))
    return centre[:, None] + np.linspace(-span, span, steps)[None, :] * sigma[:, None]


# ----------------------------------------------------------------------------- panels


@torch.no_grad()
def traversal_panel(model: nn.Module, x: Tensor, cond: Tensor | None, values: np.ndarray, kl_per_dim: np.ndarray,
                    labels: Sequence[str] | None = None, active_threshold: float = ACTIVE_DIM_NATS,
                    include_inactive: bool = True, max_dims: int | None = None) -> Tensor:
    """One row per latent dim (highest KL first): each reference face's latent with that dim swept.

    `x` (R, 3, H, W) are the reference faces, `values` (D, S) the swept values per dim (see
    `sweep_values`); a row shows the R faces one after another, S steps each. `labels` are one per
    dim in dim order (e.g. from `celeb.evaluation.dimensions.label_dimensions`); inactive rows are greyed out, or dropped with
    include_inactive=False. `max_dims` keeps only the first rows.
    """
    mu, _ = model.encode(x, cond)
    num_refs, steps = len(x), values.shape[1]
    order = [d for d in kl_order(kl_per_dim)
             if include_inactive or kl_per_dim[d] > active_threshold][:max_dims]
    rows, row_labels = [], []
    for d in order:
        z = mu.repeat_interleave(steps, dim=0)  # (R*S, D): each face S times
        z[:, d] = torch.as_tensor(values[d], dtype=z.dtype, device=z.device).repeat(num_refs)
        c = cond.repeat_interleave(steps, dim=0) if cond is not None else None
        images = model.decode_images(z, c).float().cpu()
        if kl_per_dim[d] <= active_threshold:
            images = 0.35 * images + 0.65 * 0.8  # greyed: a collapsed dim
        rows.append(images)
        row_labels.append(labels[d] if labels is not None else f"dim {d}  KL {kl_per_dim[d]:.2f}")
    if not rows:
        return blank_panel("no active latent dimensions")
    grid = make_grid(torch.cat(rows), nrow=num_refs * steps, padding=PADDING, pad_value=1.0)
    return with_row_labels(grid, row_labels)


@torch.no_grad()
def condition_panel(model: nn.Module, x: Tensor, cond: Tensor, names: Sequence[str], steps: int = 5) -> Tensor:
    """One row per condition attribute: the faces decoded with that attribute swept 0 -> 1.

    The latent is each face's posterior mean under its true conditions; only the decoder's input
    for that one attribute changes along the row.
    """
    if cond is None or cond.shape[1] == 0:
        return blank_panel("unconditional model: no condition attributes")
    mu, _ = model.encode(x, cond)
    num_refs = len(x)
    z = mu.repeat_interleave(steps, dim=0)
    sweep = torch.linspace(0.0, 1.0, steps, device=cond.device).repeat(num_refs)
    rows = []
    for k in range(cond.shape[1]):
        c = cond.repeat_interleave(steps, dim=0).clone()
        c[:, k] = sweep
        rows.append(model.decode_images(z, c).float().cpu())
    grid = make_grid(torch.cat(rows), nrow=num_refs * steps, padding=PADDING, pad_value=1.0)
    return with_row_labels(grid, [f"{name}: off → on" for name in names])


@torch.no_grad()
def group_panel(model: nn.Module, x: Tensor, cond: Tensor | None, group: int, steps: int = 7,
                span: float = 3.0) -> Tensor:
    """One row per channel of a hierarchical VAE's lower latent group `group` (HierarchicalVAE.traverse_group):
    the R faces one after another, `steps` values each, from -span to +span prior σ."""
    images = model.traverse_group(x, cond, group, steps=steps, span=span).float().cpu()
    grid = make_grid(images, nrow=len(x) * steps, padding=PADDING, pad_value=1.0)
    return with_row_labels(grid, [f"group {group} ch {c}" for c in range(len(images) // (len(x) * steps))])


@torch.no_grad()
def reconstruction_panel(model: nn.Module, x: Tensor, cond: Tensor | None) -> Tensor:
    """Originals (top row) above their reconstructions from the posterior mean (bottom row)."""
    recon = model.reconstruct(x, cond).float().clamp(0, 1)
    both = torch.cat([x.float().cpu(), recon.cpu()])
    return make_grid(both, nrow=len(x), padding=PADDING, pad_value=1.0)


def kl_bar_chart(kl_per_dim: np.ndarray, active_threshold: float = ACTIVE_DIM_NATS,
                 labels: Sequence[str] | None = None) -> np.ndarray:
    """Per-dim KL (nats) as bars, highest first, active ones coloured: an (H, W, 3) uint8 image."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    kl = np.asarray(kl_per_dim, dtype=np.float64)
    order = kl_order(kl)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.22 * len(kl) + 1.5), 2.8), dpi=100)
    try:
        colours = ["tab:blue" if kl[d] > active_threshold else "lightgrey" for d in order]
        ax.bar(np.arange(len(kl)), kl[order], color=colours)
        ax.set_xticks(np.arange(len(kl)), [str(d) for d in order], fontsize=7, rotation=90 if len(kl) > 24 else 0)
        ax.set_xlabel("latent dim (by KL)")
        ax.set_ylabel("KL (nats)")
        ax.set_title(f"KL per dim: {int((kl > active_threshold).sum())} of {len(kl)} active", fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        fig.tight_layout()
        fig.canvas.draw()
        return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(fig)


def with_row_labels(grid: Tensor, labels: Sequence[str], width: int | None = None) -> Tensor:
    """`grid` (a make_grid image of len(labels) rows) with each row's label in a white left margin."""
    _, height, grid_width = grid.shape
    row_height = (height - PADDING) / max(1, len(labels))
    font = ImageFont.load_default(size=max(9, min(14, int(row_height * 0.3))))
    width = width or int(max(font.getlength(_drawable(label)) for label in labels) + 10) if labels else 0
    canvas = Image.new("RGB", (width + grid_width, height), "white")
    canvas.paste(Image.fromarray(_to_uint8(grid)), (width, 0))
    draw = ImageDraw.Draw(canvas)
    for i, label in enumerate(labels):
        draw.text((4, PADDING + (i + 0.5) * row_height), _drawable(label), fill="black", font=font, anchor="lm")
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float().div(255.0)


def blank_panel(message: str, size: tuple[int, int] = (40, 360)) -> Tensor:
    """A white (3, H, W) image that says why there is nothing to show."""
    canvas = Image.new("RGB", (size[1], size[0]), "white")
    ImageDraw.Draw(canvas).text((6, size[0] // 2), message, fill="black", anchor="lm",
                                font=ImageFont.load_default(size=12))
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).float().div(255.0)


def _drawable(label: str) -> str:
    """Pillow's built-in font has no arrows."""
    return label.replace("↔", "<->").replace("→", "->")


def _to_uint8(image: Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


# ----------------------------------------------------------------------------- every panel of one model


def latent_panels(model: nn.Module, x: Tensor, cond: Tensor | None, mu: np.ndarray, logvar: np.ndarray,
                  dimensions: pd.DataFrame, conditions: Sequence[str], steps: int = 7, span: float = 3.0,
                  include_inactive: bool = True, max_dims: int | None = None) -> dict[str, Tensor | np.ndarray]:
    """"traversal", "kl_per_dim" and (conditional models) "conditions" for reference faces `x`.

    `mu`/`logvar` (N, D) are the encoded evaluation images that set each dim's sweep range, and
    `dimensions` their table from `celeb.evaluation.latents.score_latents` (KL and labels).
    """
    by_dim = dimensions.sort_values("dim")
    kl = by_dim["kl"].to_numpy()
    panels: dict[str, Tensor | np.ndarray] = {
        "traversal": traversal_panel(model, x, cond, sweep_values(mu, logvar, steps, span), kl,
                                     labels=by_dim["label"].tolist(), include_inactive=include_inactive,
                                     max_dims=max_dims),
        "kl_per_dim": kl_bar_chart(kl),
    }
    if cond is not None:
        panels["conditions"] = condition_panel(model, x, cond, list(conditions), steps=max(3, steps - 2))
    return panels
