"""A compact hierarchical VAE after NVAE (Vahdat & Kautz 2020): a global latent vector on top of
spatial latent groups at several scales, a bottom-up encoder and a top-down decoder.

Structure, with k = `width`, at 64 px and `scales` = 2 (latent scales 8x8 and 16x16):

    bottom-up   x -> stem (k, 64) -> down (k, 32) -> down (2k, 16) -> down (4k, 8) -> down (4k, 4) -> flat
                each resolution's features, after `cells` encoder cells, are kept for the top-down pass
    top group   q(z_0 | x, c) = N(mu, diag(exp(logvar))) from the flat features and the attributes c;
                p(z_0) = N(0, I). z_0 (`latent_dim` dims) holds the global factors: it is what
                traversals sweep and the disentanglement metrics score.
    top-down    s = linear(z_0, c) at 4x4 -> up to 8x8; then at each latent scale r (coarse to fine),
                `groups` times: prior p(z_g | s) and posterior q(z_g | s, features_r) from 1x1
                convolutions, z_g (`latent_channels` x r x r) sampled, s += conv(z_g), s = cells(s);
                then up to the image's size and an output convolution to the likelihood's channels.

Choices, and why:
- Residual cells as NVAE's: encoder cells GN-SiLU-conv3x3-GN-SiLU-conv3x3-SE; decoder cells
  GN-conv1x1 (expand x3)-GN-SiLU-depthwise conv5x5-GN-SiLU-conv1x1-GN-SE; each added to its input.
  GroupNorm rather than NVAE's BatchNorm, for the CVAE's reason: an image's output does not depend
  on the rest of its batch or on train/eval mode, so reconstructions, panels and exported models
  behave the same in any batch (NVAE needs BN statistics re-estimated before sampling).
- The residual-normal posterior (`residual_posterior`): q's mean and log-scale are offsets from the
  prior's, q = N(mu_p + dmu, sigma_p * exp(dlog_sigma)), so the KL of a group is simple and small
  at the start. Off, q's parameters come straight from the posterior convolution.
- Group parameters are soft-clamped to [-5, 5] (NVAE's guard against exploding log-scales).
- Spectral regularisation (`spectral_loss`): the largest singular value of every convolution's and
  linear layer's weight, estimated by one power iteration per training step (the vectors are
  buffers, saved with the model, so a resumed run continues exactly); the objective adds its sum
  times the config's coefficient.
- KL balancing (in `hvae_loss`): while the KL weight is still warming up, each group's KL is
  weighted by its share of the KL per latent unit, so groups carrying little information are not
  pushed to collapse; after warm-up the objective is recon + β·(total KL), the CVAE's β-VAE
  objective on the total KL, so β sweeps mean the same for both families.

The model has the CVAE's interface (encode, decode, decode_images, reconstruct, sample, latent_dim),
on its top group: `decode(z_0, c)` sets every lower group to its prior mean given the groups above
(a deterministic view of what the global latents do), which is what traversals show.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from celeb.models.cvae import IMAGE_SIZES, ConditionalImageModel, _group_norm, standard_normal
from celeb.models.likelihood import check_recon, output_images, output_layer, reconstruction_nll

GroupEdit = Callable[[int, Tensor, tuple[Tensor, Tensor]], Tensor]
TOP_RESOLUTION = 4  # the bottom-up pass is flattened here for the top group
FIRST_LATENT_RESOLUTION = 8


class HVAEOutput(NamedTuple):
    """One forward pass: decoder outputs, the top group's mu/logvar and z, and each lower group's KL (B, G)."""

    logits: Tensor
    mu: Tensor
    logvar: Tensor
    z: Tensor
    kl_groups: Tensor


class HVAELoss(NamedTuple):
    total: Tensor
    recon: Tensor
    kl: Tensor  # every group's, summed
    kl_per_dim: Tensor  # the top group's, per dim (D,)
    kl_groups: Tensor  # (1 + G,): the top group's, then each lower group's (batch means)


def soft_clamp(x: Tensor, bound: float = 5.0) -> Tensor:
    return bound * torch.tanh(x / bound)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 16, 4)
        self.gate = nn.Sequential(nn.Linear(channels, hidden), nn.SiLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gate(x.mean(dim=(2, 3)))[:, :, None, None]


class EncoderCell(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  _group_norm(channels), nn.SiLU(), nn.Conv2d(channels, channels, 3, padding=1),
                                  SqueezeExcite(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class DecoderCell(nn.Module):
    def __init__(self, channels: int, expand: int = 3) -> None:
        super().__init__()
        wide = channels * expand
        self.body = nn.Sequential(_group_norm(channels), nn.Conv2d(channels, wide, 1), _group_norm(wide), nn.SiLU(),
                                  nn.Conv2d(wide, wide, 5, padding=2, groups=wide), _group_norm(wide), nn.SiLU(),
                                  nn.Conv2d(wide, channels, 1), _group_norm(channels), SqueezeExcite(channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class LatentGroup(nn.Module):
    """One spatial latent group: its prior from the top-down state, its posterior from the state and
    the bottom-up features, and how its sample enters the state."""

    def __init__(self, channels: int, latent_channels: int, residual: bool) -> None:
        super().__init__()
        self.residual = residual
        self.prior = nn.Conv2d(channels, 2 * latent_channels, 1)
        self.posterior = nn.Conv2d(2 * channels, 2 * latent_channels, 1)
        self.project = nn.Conv2d(latent_channels, channels, 1)
        if residual:  # q starts equal to p: every group starts with no KL and is used as training finds it useful
            nn.init.zeros_(self.posterior.weight)
            nn.init.zeros_(self.posterior.bias)

    def prior_params(self, s: Tensor) -> tuple[Tensor, Tensor]:
        mu, log_sigma = self.prior(s).chunk(2, dim=1)
        return soft_clamp(mu), soft_clamp(log_sigma)

    def posterior_params(self, s: Tensor, features: Tensor, prior: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        mu, log_sigma = self.posterior(torch.cat([s, features], dim=1)).chunk(2, dim=1)
        if self.residual:
            return prior[0] + soft_clamp(mu), prior[1] + soft_clamp(log_sigma)
        return soft_clamp(mu), soft_clamp(log_sigma)


def log_normal(z: Tensor, params: tuple[Tensor, Tensor]) -> Tensor:
    """log N(z; mu, sigma) per image (B,), summed over its units; params = (mu, log_sigma)."""
    mu, log_sigma = (t.float() for t in params)
    return (-0.5 * ((z.float() - mu) / log_sigma.exp()).square() - log_sigma
            - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def gaussian_kl(q: tuple[Tensor, Tensor], p: tuple[Tensor, Tensor]) -> Tensor:
    """KL(N(mu_q, sigma_q) || N(mu_p, sigma_p)) per image (B,), summed over the group's units; the
    arguments are (mu, log_sigma) pairs."""
    (mu_q, log_q), (mu_p, log_p) = (tuple(t.float() for t in q), tuple(t.float() for t in p))
    ratio = torch.exp(2 * (log_q - log_p)) + ((mu_q - mu_p) / torch.exp(log_p)).square()
    return (0.5 * ratio - 0.5 - (log_q - log_p)).flatten(1).sum(1)


class HierarchicalVAE(ConditionalImageModel):
    """A conditional hierarchical VAE on (B,3,H,W) images in [0,1] (see the module docstring)."""

    def __init__(self, image_size: int = 64, latent_dim: int = 32, width: int = 32, cond_dim: int = 0,
                 scales: int = 2, groups: int = 2, latent_channels: int = 8, cells: int = 1,
                 residual_posterior: bool = True, recon: str = "logistic") -> None:
        super().__init__()
        check_recon(recon)
        if image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {image_size}")
        finest = FIRST_LATENT_RESOLUTION * 2 ** (scales - 1)
        if scales < 1 or finest > image_size // 2:
            raise ValueError(f"scales must be 1..{int(math.log2(image_size // 2 // FIRST_LATENT_RESOLUTION)) + 1} "
                             f"at {image_size} px (latent scales from 8x8 up to half the image), got {scales}")
        if min(latent_dim, width, groups, latent_channels, cells) < 1 or cond_dim < 0:
            raise ValueError("latent_dim, width, groups, latent_channels and cells must be >= 1, cond_dim >= 0")
        self.image_size, self.latent_dim, self.width, self.cond_dim = image_size, latent_dim, width, cond_dim
        self.recon, self.latent_channels = recon, latent_channels
        self.resolutions = [FIRST_LATENT_RESOLUTION * 2**i for i in range(scales)]  # latent scales, coarse first
        levels = int(math.log2(image_size // TOP_RESOLUTION))  # 4 at 64 px
        sizes = [image_size // 2**i for i in range(levels + 1)]  # 64, 32, 16, 8, 4
        self.channels = {r: width * min(2 ** max(int(math.log2(image_size // r)) - 1, 0), 4) for r in sizes}

        self.stem = nn.Conv2d(3, self.channels[image_size], 3, padding=1)
        self.down = nn.ModuleList(nn.Sequential(nn.Conv2d(self.channels[a], self.channels[b], 4, stride=2, padding=1),
                                                *[EncoderCell(self.channels[b]) for _ in range(cells)])
                                  for a, b in zip(sizes, sizes[1:]))
        flat = self.channels[TOP_RESOLUTION] * TOP_RESOLUTION**2
        self.to_posterior = nn.Linear(flat + cond_dim, 2 * latent_dim)
        self.from_latent = nn.Linear(latent_dim + cond_dim, flat)

        self.up = nn.ModuleDict({str(r): nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"),
                                                       nn.Conv2d(self.channels[r // 2], self.channels[r], 3, padding=1))
                                 for r in sizes[:-1]})
        self.groups = nn.ModuleDict({str(r): nn.ModuleList(LatentGroup(self.channels[r], latent_channels,
                                                                       residual_posterior) for _ in range(groups))
                                     for r in self.resolutions})
        self.group_cells = nn.ModuleDict({str(r): nn.ModuleList(nn.Sequential(*[DecoderCell(self.channels[r])
                                                                                for _ in range(cells)])
                                                                for _ in range(groups)) for r in self.resolutions})
        # no cell at the image's own resolution: there it would cost more than the whole hierarchy
        self.head = nn.Sequential(_group_norm(self.channels[image_size]), nn.SiLU(),
                                  output_layer(self.channels[image_size], recon))
        self._spectral_vectors()

    # -- the two passes ------------------------------------------------------------------------

    def bottom_up(self, x: Tensor) -> dict[int, Tensor]:
        """The encoder's features at every resolution (the image's, halved down to 4x4)."""
        self._check_images(x)
        h = self.stem(2 * x - 1)
        features = {self.image_size: h}
        for down in self.down:
            h = down(h)
            features[h.shape[-1]] = h
        return features

    def top_posterior(self, features: dict[int, Tensor], cond: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self._with_cond(features[TOP_RESOLUTION].flatten(1), cond)
        mu, logvar = self.to_posterior(h).chunk(2, dim=1)
        return mu, logvar

    def top_down(self, z: Tensor, cond: Tensor | None, features: dict[int, Tensor] | None,
                 eps: list[Tensor] | None, edit: GroupEdit | None = None,
                 sampled_kl: bool = False) -> tuple[Tensor, Tensor]:
        """Decoder outputs and each lower group's KL (B, G). With `features` the groups come from
        the posterior (sampled with `eps`, or at their means when eps is None); without, from the
        prior (sampled with `eps`, or at the prior means). `edit(group, z_g, prior)` may change a
        group's latents before the groups below see them (groups numbered as `group_sizes`). With
        `sampled_kl` each group's log q(z_g) - log p(z_g) at its sample replaces the analytic KL."""
        s = self.from_latent(self._with_cond(z, cond))
        s = s.view(-1, self.channels[TOP_RESOLUTION], TOP_RESOLUTION, TOP_RESOLUTION)
        kls, k = [], 0
        resolution = TOP_RESOLUTION
        while resolution < self.image_size:
            resolution *= 2
            s = self.up[str(resolution)](s)
            key = str(resolution)
            scale = zip(self.groups[key], self.group_cells[key]) if key in self.groups else ()
            for group, cells in scale:
                prior = group.prior_params(s)
                params = group.posterior_params(s, features[resolution], prior) if features is not None else prior
                zg = params[0] if eps is None else params[0] + torch.exp(params[1]) * eps[k].to(params[0].dtype)
                if edit is not None:
                    zg = edit(k + 1, zg, prior)
                if features is not None:
                    kls.append(log_normal(zg, params) - log_normal(zg, prior) if sampled_kl
                               else gaussian_kl(params, prior))
                s = cells(s + group.project(zg))
                k += 1
        out = self.head(s)
        kl = torch.stack(kls, dim=1) if kls else out.new_zeros((out.shape[0], 0))
        return out, kl

    def forward(self, x: Tensor, cond: Tensor | None = None, generator: torch.Generator | None = None,
                eps: list[Tensor] | None = None) -> HVAEOutput:
        """Encode, sample every group (noise from `generator`, or the given `eps`: one tensor per
        `noise_shapes` entry), decode."""
        features = self.bottom_up(x)
        mu, logvar = self.top_posterior(features, cond)
        if eps is None:
            eps = [standard_normal(shape, mu, generator) for shape in self.noise_shapes(x.shape[0])]
        z = mu + torch.exp(0.5 * logvar) * eps[0].to(mu.dtype)
        out, kl_groups = self.top_down(z, cond, features, eps[1:])
        return HVAEOutput(out, mu, logvar, z, kl_groups)

    def noise_shapes(self, batch: int) -> list[tuple[int, ...]]:
        """The shapes of one forward pass's noise: the top group's, then each lower group's."""
        lower = [(batch, self.latent_channels, r, r) for r in self.resolutions for _ in self.groups[str(r)]]
        return [(batch, self.latent_dim), *lower]

    @property
    def num_groups(self) -> int:
        """Latent groups, the top one included."""
        return 1 + sum(len(g) for g in self.groups.values())

    def group_sizes(self) -> list[int]:
        """Latent units per group (the top group's first)."""
        return [self.latent_dim] + [self.latent_channels * r * r for r in self.resolutions for _ in self.groups[str(r)]]

    @torch.no_grad()
    def importance_nll(self, x: Tensor, cond: Tensor | None, samples: int, generator: torch.Generator | None = None
                       ) -> Tensor:
        """-log p(x) per image (B,), nats, by importance sampling with `samples` draws from the
        posterior (Burda et al.'s bound: tighter than the ELBO, and exact as samples grow)."""
        features = self.bottom_up(x)
        mu, logvar = self.top_posterior(features, cond)
        top = (mu, 0.5 * logvar)
        log_weights = []
        for _ in range(samples):
            eps = [standard_normal(shape, mu, generator) for shape in self.noise_shapes(x.shape[0])]
            z = mu + torch.exp(0.5 * logvar) * eps[0]
            out, lower = self.top_down(z, cond, features, eps[1:], sampled_kl=True)
            log_prior_ratio = log_normal(z, (torch.zeros_like(mu), torch.zeros_like(mu))) - log_normal(z, top)
            log_weights.append(-reconstruction_nll(out, x, self.recon) + log_prior_ratio - lower.sum(1))
        return -(torch.logsumexp(torch.stack(log_weights), dim=0) - math.log(samples))

    # -- the CVAE's interface, on the top group -------------------------------------------------

    def encode(self, x: Tensor, cond: Tensor | None) -> tuple[Tensor, Tensor]:
        """The top group's posterior (mu, logvar), each (B, latent_dim)."""
        return self.top_posterior(self.bottom_up(x), cond)

    def decode(self, z: Tensor, cond: Tensor | None) -> Tensor:
        """Decoder outputs for top latents z, every lower group at its prior mean."""
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        return self.top_down(z, cond, None, None)[0]

    @torch.no_grad()
    def reconstruct(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        """Images in [0,1] from every group's posterior mean."""
        features = self.bottom_up(x)
        mu, _ = self.top_posterior(features, cond)
        return output_images(self.top_down(mu, cond, features, None)[0], self.recon)

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None,
               temperature: float = 1.0) -> Tensor:
        """`n` images in [0,1] with every group drawn from its prior, its σ scaled by `temperature`
        (NVAE shows samples at 0.6-0.9: a short-trained hierarchy's priors are wide)."""
        param = next(self.parameters())
        if cond is not None and cond.ndim == 1:
            cond = cond.unsqueeze(0).expand(n, -1)
        eps = [temperature * standard_normal(shape, param, generator) for shape in self.noise_shapes(n)]
        return output_images(self.top_down(eps[0], cond, None, eps[1:])[0], self.recon)

    @torch.no_grad()
    def traverse_group(self, x: Tensor, cond: Tensor | None, group: int, steps: int = 7,
                       span: float = 3.0) -> Tensor:
        """Images (channels x R x steps, 3, H, W): for each channel of lower group `group`, each
        of the R faces with every group at its posterior mean and that channel moved, at every
        position, by δ times its prior's σ for δ from -span to span; the groups below follow at
        their posterior means given the change."""
        if not 1 <= group < self.num_groups:
            raise ValueError(f"group must be one of the lower groups 1..{self.num_groups - 1} (0 is the top "
                             f"group, traversed dim by dim), got {group}")
        features = self.bottom_up(x)
        mu, _ = self.top_posterior(features, cond)
        repeated = {r: f.repeat_interleave(steps, dim=0) for r, f in features.items()}
        z, c = mu.repeat_interleave(steps, dim=0), cond.repeat_interleave(steps, dim=0) if cond is not None else None
        deltas = torch.linspace(-span, span, steps, device=x.device).repeat(len(x)).view(-1, 1, 1)
        rows = []
        for channel in range(self.latent_channels):
            def move(k: int, zg: Tensor, prior: tuple[Tensor, Tensor], channel: int = channel) -> Tensor:
                if k != group:
                    return zg
                zg = zg.clone()
                zg[:, channel] += deltas * torch.exp(prior[1][:, channel])
                return zg

            rows.append(output_images(self.top_down(z, c, repeated, None, move)[0], self.recon))
        return torch.cat(rows)

    # -- spectral regularisation ---------------------------------------------------------------

    def _spectral_vectors(self) -> None:
        """One left singular vector estimate per weight matrix, as a buffer (saved with the model)."""
        for k, layer in enumerate(self._spectral_layers()):
            u = F.normalize(torch.randn(layer.weight.shape[0]), dim=0)
            self.register_buffer(f"spectral_u{k}", u)

    def _spectral_layers(self) -> list[nn.Module]:
        return [m for m in self.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.shape[0] > 1]

    def spectral_loss(self) -> Tensor:
        """The sum of every weight's largest singular value, by one power iteration each (which also
        refines the saved vectors; call it once per training step)."""
        total = 0.0
        for k, layer in enumerate(self._spectral_layers()):
            w = layer.weight.flatten(1)
            u = getattr(self, f"spectral_u{k}")
            with torch.no_grad():
                v = F.normalize(w.t().float() @ u, dim=0)
                u.copy_(F.normalize(w.float() @ v, dim=0))
            total = total + u @ (w.float() @ v)
        return total


def hvae_loss(out: HVAEOutput, x: Tensor, kl_weight: float, capacity: float, recon: str, group_sizes: list[int],
              balance: bool) -> HVAELoss:
    """recon + kl_weight * (total KL), or |total KL - C| with a capacity; with `balance` (during the
    KL warm-up) each group's KL is weighted by its share of the KL per latent unit, normalised to a
    mean weight of 1 (NVAE's KL balancing)."""
    recon_loss = reconstruction_nll(out.logits, x, recon).mean()
    mu, logvar = out.mu.float(), out.logvar.float()
    kl_per_dim = (0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar)).mean(0)
    kl_groups = torch.cat([kl_per_dim.sum()[None], out.kl_groups.float().mean(0)])
    kl = kl_groups.sum()
    kl_term = kl
    if balance:
        per_unit = (kl_groups.detach() + 0.01) / torch.tensor(group_sizes, dtype=kl.dtype, device=kl.device)
        weights = per_unit / per_unit.mean()
        kl_term = (kl_groups * weights).sum()
    if capacity > 0:
        kl_term = (kl_term - capacity).abs()
    return HVAELoss(recon_loss + kl_weight * kl_term, recon_loss, kl, kl_per_dim, kl_groups)
