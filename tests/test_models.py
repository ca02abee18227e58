"""Conditional β-VAE and attribute classifiers: shapes, objective, schedules, weights, freezing."""

from __future__ import annotations

import math
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch.distributions import Normal, kl_divergence

from celeb.models import (
    ClassifierOutput,
    ConditionalVAE,
    VAEOutput,
    build_classifier,
    capacity_schedule,
    classifier_loss,
    input_size,
    kl_weight_schedule,
    normalized_beta_to_beta,
    parameter_groups,
    vae_loss,
)


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread():
    # These are many tiny ops: on a shared 2-core machine, intra-op threads mostly wait on each
    # other (measured 25x slower than one thread under load), so run this module single-threaded.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _cond(n: int, dim: int, seed: int = 1) -> torch.Tensor | None:
    if dim == 0:
        return None
    return torch.randint(0, 2, (n, dim), generator=torch.Generator().manual_seed(seed)).float()


# -- ConditionalVAE: shapes and plumbing -------------------------------------------------------


@pytest.mark.parametrize(
    "image_size, width, latent_dim, cond_dim",
    [(64, 8, 16, 0), (64, 16, 32, 5), (64, 3, 4, 40), (128, 4, 8, 0), (128, 8, 2, 3)],
)
def test_vae_shapes(image_size, width, latent_dim, cond_dim):
    torch.manual_seed(0)
    model = ConditionalVAE(image_size, latent_dim, width, cond_dim)
    x, cond = _images(3, image_size), _cond(3, cond_dim)

    out = model(x, cond)
    assert isinstance(out, VAEOutput)
    assert out.logits.shape == (3, 3, image_size, image_size)
    assert out.mu.shape == out.logvar.shape == out.z.shape == (3, latent_dim)

    for images in (model.reconstruct(x, cond), model.sample(3, cond), model.edit(x, cond, cond)):
        assert images.shape == (3, 3, image_size, image_size)
        assert images.min() >= 0 and images.max() <= 1


def test_vae_channels_scale_with_width():
    small, big = ConditionalVAE(64, 8, width=4), ConditionalVAE(64, 8, width=8)
    assert [m.out_channels for m in small.encoder.modules() if isinstance(m, torch.nn.Conv2d)] == [4, 8, 16, 32]
    assert ConditionalVAE(128, 8, width=4).flat_dim == 64 * 4 * 4  # 5 levels: k .. 16k
    assert sum(p.numel() for p in big.parameters()) > 3 * sum(p.numel() for p in small.parameters())


def test_vae_rejects_bad_arguments():
    with pytest.raises(ValueError, match="image_size must be one of"):
        ConditionalVAE(image_size=96)
    model = ConditionalVAE(64, 8, width=4, cond_dim=2)
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 64, 64\)"):
        model(_images(2, 128), _cond(2, 2))
    with pytest.raises(ValueError, match="pass cond of shape"):
        model(_images(2, 64))
    with pytest.raises(ValueError, match="cond must have shape"):
        model(_images(2, 64), _cond(2, 3))


def test_vae_init_is_seeded():
    torch.manual_seed(123)
    a = ConditionalVAE(64, 8, width=4, cond_dim=2).state_dict()
    torch.manual_seed(123)
    b = ConditionalVAE(64, 8, width=4, cond_dim=2).state_dict()
    torch.manual_seed(124)
    c = ConditionalVAE(64, 8, width=4, cond_dim=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_vae_noise_comes_from_generator():
    model = ConditionalVAE(64, 8, width=4)
    x = _images(2, 64)
    z1 = model(x, generator=torch.Generator().manual_seed(5)).z
    z2 = model(x, generator=torch.Generator().manual_seed(5)).z
    z3 = model(x, generator=torch.Generator().manual_seed(6)).z
    assert torch.equal(z1, z2) and not torch.equal(z1, z3)
    s1 = model.sample(2, generator=torch.Generator().manual_seed(5))
    s2 = model.sample(2, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1, s2)


def test_vae_unconditional_ignores_cond():
    model = ConditionalVAE(64, 8, width=4, cond_dim=0)
    x = _images(2, 64)
    assert torch.equal(model.reconstruct(x), model.reconstruct(x, torch.ones(2, 5)))


def test_vae_outputs_do_not_depend_on_the_batch():
    # GroupNorm: one image's reconstruction is the same alone or in a batch, train or eval mode.
    model = ConditionalVAE(64, 8, width=4, cond_dim=2)
    x, cond = _images(4, 64), _cond(4, 2)
    together = model.reconstruct(x, cond)
    alone = model.reconstruct(x[:1], cond[:1])
    torch.testing.assert_close(alone, together[:1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.eval().reconstruct(x, cond), together)


def test_sample_broadcasts_one_condition_row():
    model = ConditionalVAE(64, 8, width=4, cond_dim=3)
    row = torch.tensor([1.0, 0.0, 1.0])
    a = model.sample(4, row, generator=torch.Generator().manual_seed(0))
    b = model.sample(4, row.expand(4, 3), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_edit_changes_output_only_when_condition_changes():
    torch.manual_seed(0)
    model = ConditionalVAE(64, 8, width=4, cond_dim=2)
    x = _images(2, 64)
    cond = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    same = model.edit(x, cond, cond)
    torch.testing.assert_close(same, model.reconstruct(x, cond))
    flipped = model.edit(x, cond, 1 - cond)
    assert (flipped - same).abs().mean() > 1e-4


def test_vae_channels_last_and_bf16_autocast():
    torch.manual_seed(0)
    model = ConditionalVAE(64, 8, width=8, cond_dim=2)
    x, cond = _images(2, 64), _cond(2, 2)
    reference = model(x, cond, generator=torch.Generator().manual_seed(0))

    model = model.to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x_cl, cond, generator=torch.Generator().manual_seed(0))
        loss = vae_loss(out, x_cl, beta=2.0)
    loss.total.backward()
    assert loss.total.dtype == torch.float32 and torch.isfinite(loss.total)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    torch.testing.assert_close(out.mu.float(), reference.mu, atol=0.1, rtol=0.1)
    ref_loss = vae_loss(reference, x, beta=2.0)
    assert abs(loss.recon.item() - ref_loss.recon.item()) < 0.01 * ref_loss.recon.item()


# -- the objective -----------------------------------------------------------------------------


def _fake_output(mu: torch.Tensor, logvar: torch.Tensor, size: int = 8, seed: int = 0) -> VAEOutput:
    logits = torch.randn(len(mu), 3, size, size, generator=torch.Generator().manual_seed(seed))
    return VAEOutput(logits, mu, logvar, mu)


def test_vae_loss_parts_are_consistent():
    gen = torch.Generator().manual_seed(0)
    mu, logvar = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    out, x = _fake_output(mu, logvar), _images(4, 8)
    loss = vae_loss(out, x, beta=3.5)

    torch.testing.assert_close(loss.total, loss.recon + 3.5 * loss.kl)
    torch.testing.assert_close(loss.kl_per_dim.sum(), loss.kl)
    assert loss.kl_per_dim.shape == (6,)
    reference_kl = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(loss.kl, reference_kl)
    reference_bce = F.binary_cross_entropy(torch.sigmoid(out.logits), x, reduction="sum") / 4
    torch.testing.assert_close(loss.recon, reference_bce, rtol=1e-4, atol=1e-3)


def test_vae_loss_mse_and_capacity():
    gen = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    out, x = _fake_output(mu, logvar), _images(4, 8)

    mse = vae_loss(out, x, beta=1.0, recon="mse")
    torch.testing.assert_close(mse.recon, ((torch.sigmoid(out.logits) - x) ** 2).sum() / 4)

    kl = vae_loss(out, x, beta=1.0).kl.item()
    for capacity in (kl / 2, kl * 2):
        loss = vae_loss(out, x, beta=4.0, capacity=capacity)
        torch.testing.assert_close(loss.total, loss.recon + 4.0 * abs(loss.kl - capacity))
    with pytest.raises(ValueError, match="recon must be one of"):
        vae_loss(out, x, beta=1.0, recon="l1")


def test_kl_is_zero_at_the_prior():
    zeros = torch.zeros(3, 5)
    loss = vae_loss(_fake_output(zeros, zeros), _images(3, 8), beta=10.0)
    assert abs(loss.kl.item()) < 1e-7
    assert torch.allclose(loss.kl_per_dim, torch.zeros(5))
    torch.testing.assert_close(loss.total, loss.recon)


def test_normalized_beta_round_trip():
    for beta_norm, m, size in [(1.0, 64, 64), (0.004, 10, 128), (2.5, 32, 64)]:
        beta = normalized_beta_to_beta(beta_norm, m, size)
        n = 3 * size * size
        assert math.isclose(beta * m / n, beta_norm)
    assert normalized_beta_to_beta(1.0, 10, 64, channels=1) * 3 == pytest.approx(normalized_beta_to_beta(1.0, 10, 64))
    with pytest.raises(ValueError):
        normalized_beta_to_beta(1.0, 0, 64)


def test_kl_weight_schedule_warms_up_linearly():
    beta = 4.0
    assert kl_weight_schedule(0, 0, 100, beta, warmup_epochs=2) == 0.0
    assert kl_weight_schedule(0, 50, 100, beta, warmup_epochs=2) == pytest.approx(1.0)
    assert kl_weight_schedule(1, 0, 100, beta, warmup_epochs=2) == pytest.approx(2.0)
    assert kl_weight_schedule(2, 0, 100, beta, warmup_epochs=2) == beta
    assert kl_weight_schedule(7, 3, 100, beta, warmup_epochs=2) == beta
    assert kl_weight_schedule(0, 0, 100, beta, warmup_epochs=0) == beta
    weights = [kl_weight_schedule(e, s, 10, beta, 1.5) for e in range(3) for s in range(10)]
    assert weights == sorted(weights) and weights[-1] == beta


def test_capacity_schedule_rises_to_max():
    assert capacity_schedule(0, 25.0, 1000) == 0.0
    assert capacity_schedule(250, 25.0, 1000) == pytest.approx(6.25)
    assert capacity_schedule(1000, 25.0, 1000) == 25.0
    assert capacity_schedule(5000, 25.0, 1000) == 25.0
    assert capacity_schedule(3, 25.0, 0) == 25.0


def test_vae_overfits_eight_images():
    torch.manual_seed(0)
    model = ConditionalVAE(64, latent_dim=8, width=8, cond_dim=2)
    # Smooth images (upsampled 4x4 noise) so there is something learnable to fit.
    x = F.interpolate(_images(8, 4), size=64, mode="bilinear", align_corners=False)
    cond = _cond(8, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(30):
        loss = vae_loss(model(x, cond, generator=gen), x, beta=0.1)
        opt.zero_grad()
        loss.total.backward()
        opt.step()
        losses.append(loss.recon.item())
    # BCE has a floor (the images' own entropy); measure the progress above it.
    floor = F.binary_cross_entropy(x, x, reduction="sum").item() / len(x)
    assert losses[-1] - floor < 0.5 * (losses[0] - floor)


# -- classifiers -------------------------------------------------------------------------------


def test_input_size():
    assert input_size("inception_v3") == 299
    assert input_size("small") == input_size("resnet18") == 64
    with pytest.raises(ValueError, match="unknown backbone"):
        input_size("vgg16")
    with pytest.raises(ValueError, match="unknown backbone"):
        build_classifier("vgg16")


@pytest.mark.parametrize("backbone, size", [("small", 64), ("resnet18", 64), ("resnet18", 96)])
def test_classifier_shapes(backbone, size):
    torch.manual_seed(0)
    model = build_classifier(backbone, num_outputs=7)
    for mode in (True, False):
        out = model.train(mode)(_images(2, size))
        assert isinstance(out, ClassifierOutput)
        assert out.logits.shape == (2, 7) and out.aux_logits is None


def test_inception_shapes_resize_and_aux_logits():
    torch.manual_seed(0)
    model = build_classifier("inception_v3", num_outputs=40)
    seen = []
    model.backbone.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    # Training mode on a 64-px batch: resized to 299, normalised, aux logits returned.
    small = _images(2, 64)
    out = model.train()(small)
    assert out.logits.shape == (2, 40) and out.aux_logits.shape == (2, 40)
    resized = F.interpolate(small, size=(299, 299), mode="bilinear", align_corners=False)
    torch.testing.assert_close(seen[-1], (resized - mean) / std)

    # Eval mode at 299: no resize, no aux logits.
    full = _images(2, 299)
    out = model.eval()(full)
    assert out.logits.shape == (2, 40) and out.aux_logits is None
    torch.testing.assert_close(seen[-1], (full - mean) / std)


def test_torchvision_backbones_normalise_with_imagenet_stats():
    torch.manual_seed(0)
    model = build_classifier("resnet18").eval()
    x = _images(2, 64)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = model.head(model.backbone((x - mean) / std))
    torch.testing.assert_close(model(x).logits, expected)


def test_classifier_init_is_seeded_and_dropout_applies():
    torch.manual_seed(3)
    a = build_classifier("small", dropout=0.5)
    torch.manual_seed(3)
    b = build_classifier("small", dropout=0.5)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    x = _images(4, 64)
    a.eval()
    torch.testing.assert_close(a(x).logits, a(x).logits)
    a.train()
    torch.manual_seed(0)
    first = a(x).logits
    torch.manual_seed(1)
    assert not torch.allclose(first, a(x).logits)  # dropout is active in training mode


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_freeze_backbone_trains_only_the_head():
    torch.manual_seed(0)
    model = build_classifier("resnet18", freeze_backbone=True)
    assert _trainable_names(model) == {"head.weight", "head.bias"}

    bn_before = model.backbone.bn1.running_mean.clone()
    out = model.train()(_images(2, 64))
    classifier_loss(out, torch.ones(2, 40)).backward()
    assert torch.equal(model.backbone.bn1.running_mean, bn_before)  # frozen BN stats stay put
    assert model.head.weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())

    unfrozen = build_classifier("resnet18")
    assert _trainable_names(unfrozen) == {name for name, _ in unfrozen.named_parameters()}


def test_freeze_inception_keeps_both_heads_trainable():
    model = build_classifier("inception_v3", freeze_backbone=True)
    assert _trainable_names(model) == {
        "head.weight", "head.bias", "backbone.AuxLogits.fc.weight", "backbone.AuxLogits.fc.bias"
    }
    assert model.backbone.AuxLogits.fc.out_features == 40
    groups = parameter_groups(model, lr=1e-3, backbone_lr_mult=0.1)
    assert [g["name"] for g in groups] == ["head"] and len(groups[0]["params"]) == 4


def test_parameter_groups_split_backbone_and_head():
    model = build_classifier("small")
    groups = parameter_groups(model, lr=1e-2, backbone_lr_mult=0.1)
    by_name = {g["name"]: g for g in groups}
    assert by_name["head"]["lr"] == 1e-2 and by_name["backbone"]["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in by_name["head"]["params"]} == {id(model.head.weight), id(model.head.bias)}
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters())  # each parameter once
    torch.optim.AdamW(groups)  # a valid optimizer spec


def test_classifier_loss():
    gen = torch.Generator().manual_seed(0)
    logits, aux = torch.randn(4, 40, generator=gen), torch.randn(4, 40, generator=gen)
    target = torch.randint(0, 2, (4, 40), generator=gen).bool()
    pos_weight = torch.rand(40, generator=gen) * 5

    plain = classifier_loss(ClassifierOutput(logits), target)
    torch.testing.assert_close(plain, F.binary_cross_entropy_with_logits(logits, target.float()))
    weighted = classifier_loss(ClassifierOutput(logits), target, pos_weight=pos_weight)
    torch.testing.assert_close(
        weighted, F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=pos_weight)
    )
    with_aux = classifier_loss(ClassifierOutput(logits, aux), target, aux_weight=0.4)
    torch.testing.assert_close(
        with_aux, plain + 0.4 * F.binary_cross_entropy_with_logits(aux, target.float())
    )


def test_small_classifier_overfits_eight_images():
    torch.manual_seed(0)
    model = build_classifier("small")
    x = _images(8, 32)  # the small CNN pools globally, so 32 px works and is 4x cheaper
    target = torch.randint(0, 2, (8, 40), generator=torch.Generator().manual_seed(0)).float()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = classifier_loss(model.train()(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


# -- weights -----------------------------------------------------------------------------------


def test_resnet18_loads_local_weights_file(tmp_path):
    torch.manual_seed(42)
    reference = torchvision.models.resnet18(weights=None)  # stands in for ImageNet weights
    path = tmp_path / "resnet18.pt"
    torch.save(reference.state_dict(), path)

    torch.manual_seed(0)
    model = build_classifier("resnet18", pretrained=path)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert torch.equal(model.backbone.layer4[1].bn2.running_var, reference.layer4[1].bn2.running_var)
    assert model.head.out_features == 40  # the 1000-class fc in the file was not used
    assert build_classifier("resnet18", pretrained=str(path)).backbone.conv1.weight.equal(reference.conv1.weight)


def test_inception_loads_local_weights_file(tmp_path):
    torch.manual_seed(42)
    reference = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception.pt"
    torch.save(reference.state_dict(), path)

    model = build_classifier("inception_v3", pretrained=path)
    assert torch.equal(model.backbone.Conv2d_1a_3x3.conv.weight, reference.Conv2d_1a_3x3.conv.weight)
    assert torch.equal(model.backbone.AuxLogits.conv0.conv.weight, reference.AuxLogits.conv0.conv.weight)
    assert model.backbone.AuxLogits.fc.out_features == 40
    assert model.backbone.transform_input  # ImageNet weights expect torchvision's input transform


def test_small_loads_local_weights_file(tmp_path):
    torch.manual_seed(42)
    source = build_classifier("small")
    path = tmp_path / "small.pt"
    torch.save(source.backbone.state_dict(), path)
    torch.manual_seed(0)
    model = build_classifier("small", pretrained=path)
    assert all(torch.equal(p, q) for p, q in zip(model.backbone.parameters(), source.backbone.parameters()))


def test_missing_or_wrong_weights_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt not found.*pretrained=False"):
        build_classifier("resnet18", pretrained=missing)

    wrong = tmp_path / "small.pt"
    torch.save(build_classifier("small").backbone.state_dict(), wrong)
    with pytest.raises(ValueError, match="do not fit the resnet18 backbone"):
        build_classifier("resnet18", pretrained=wrong)

    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="could not read .*garbage.pt"):
        build_classifier("resnet18", pretrained=garbage)


@pytest.mark.parametrize("backbone", ["resnet18", "inception_v3"])
def test_no_network_gives_a_clear_error(monkeypatch, backbone):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(RuntimeError, match=f"could not download ImageNet weights for {backbone}.*pretrained=PATH"):
        build_classifier(backbone, pretrained=True)


def test_small_has_no_imagenet_weights():
    with pytest.raises(ValueError, match="no ImageNet weights"):
        build_classifier("small", pretrained=True)



def test_one_builder_gives_training_and_review_the_same_network():
    from celeb.config import config_from_dict
    from celeb.models import build_model, config_beta

    classifier = config_from_dict({"task": "classifier", "classifier.backbone": "small",
                                   "classifier.freeze_backbone": True, "classifier.dropout": 0.2})
    trained, reviewed = build_model(classifier), build_model(classifier, pretrained=False)
    assert [(k, v.shape) for k, v in trained.state_dict().items()] == \
           [(k, v.shape) for k, v in reviewed.state_dict().items()]
    assert [p.requires_grad for p in trained.parameters()] == [p.requires_grad for p in reviewed.parameters()]
    assert not all(p.requires_grad for p in reviewed.parameters())  # the frozen backbone survives the rebuild

    cvae = config_from_dict({"task": "cvae", "data.image_size": 64, "cvae.latent_dim": 8, "cvae.width": 4,
                             "cvae.conditions": ["Male"], "cvae.beta_norm": 0.5})
    assert build_model(cvae, image_size=128).image_size == 128  # training: the size of its cache's images
    assert config_beta(cvae) == pytest.approx(0.5 * 3 * 64 * 64 / 8)
