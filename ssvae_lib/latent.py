"""Operations in the latent space of a trained model: analogies, style grids, interpolation, samples, and the
path of a CCVAE's characteristic latents through its class means.

All return pixel means ``[..., D]`` in [0, 1] (reshape with the dataset's ``image_shape``).
"""
from __future__ import annotations

import torch

from .checks import check_int
from .models import CCVAE, SSVAE


@torch.no_grad()
def analogies(model: SSVAE, x: torch.Tensor) -> torch.Tensor:
    """The paper's Figure 2a: infer the style z of each image, decode it with every label y = 0..C-1.
    Returns ``[B, C, D]``: row b keeps the style of image b."""
    z = model.infer_style(x)                                     # [B, Dz]
    labels = torch.arange(model.n_classes, device=z.device)
    return model.generate(labels[None, :], z[:, None, :])        # [B, C, D]


@torch.no_grad()
def style_grid(model: SSVAE, y: int, dims: tuple[int, int] = (0, 1), values=None,
               base: torch.Tensor | None = None) -> torch.Tensor:
    """The paper's Figure 2b: fix the label ``y`` and vary two style dimensions over ``values``
    (default -2..2 in 7 steps), the others at ``base`` (default 0, the prior mean). ``[n, n, D]``."""
    if not 0 <= y < model.n_classes:
        raise ValueError(f"y must lie in [0, {model.n_classes - 1}], got {y}")
    if len(set(dims)) != 2 or not all(0 <= d < model.style_dim for d in dims):
        raise ValueError(f"dims must be two different style dimensions in [0, {model.style_dim - 1}]")
    device = model.decoder_out.weight.device
    values = torch.linspace(-2, 2, 7) if values is None else torch.as_tensor(values, dtype=torch.float32)
    z = torch.zeros(len(values), len(values), model.style_dim) if base is None else \
        base.detach().to("cpu", torch.float32).expand(len(values), len(values), model.style_dim).clone()
    z[:, :, dims[0]] = values[:, None]
    z[:, :, dims[1]] = values[None, :]
    return model.generate(torch.tensor(y, device=device), z.to(device))


@torch.no_grad()
def decode_style(model: SSVAE, y: int, z) -> torch.Tensor:
    """One image from label ``y`` and style vector ``z`` (a slider panel's callback): ``[D]``."""
    device = model.decoder_out.weight.device
    z = torch.as_tensor(z, dtype=torch.float32, device=device)
    if z.shape != (model.style_dim,):
        raise ValueError(f"z must have {model.style_dim} entries, got shape {tuple(z.shape)}")
    return model.generate(torch.tensor(y, device=device), z)


@torch.no_grad()
def interpolate(model: SSVAE, x_a: torch.Tensor, x_b: torch.Tensor, y: int, steps: int = 8) -> torch.Tensor:
    """Decode label ``y`` along the straight line between the styles of two images: ``[steps, D]``."""
    z = model.infer_style(torch.stack([x_a, x_b]))
    t = torch.linspace(0, 1, steps, device=z.device)[:, None]
    return model.generate(torch.tensor(y, device=z.device), (1 - t) * z[0] + t * z[1])


@torch.no_grad()
def prior_samples(model: SSVAE, n_per_class: int = 8, seed: int = 0) -> torch.Tensor:
    """z ~ N(0, I) decoded with every label: ``[C, n_per_class, D]``."""
    device = model.decoder_out.weight.device
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(model.n_classes, n_per_class, model.style_dim, generator=g).to(device)
    return model.generate(torch.arange(model.n_classes, device=device)[:, None], z)


@torch.no_grad()
def traversal(model: SSVAE, y: int, base=None, values=None) -> torch.Tensor:
    """Latent traversal: for each style dimension j, decode label ``y`` with z_j set to each of
    ``values`` (default -2..2 in 7 steps) and the other dimensions at ``base`` (default 0, the prior
    mean). Returns ``[Dz, n_values, D]``: row j shows what z_j alone changes."""
    if not 0 <= y < model.n_classes:
        raise ValueError(f"y must lie in [0, {model.n_classes - 1}], got {y}")
    device = model.decoder_out.weight.device
    values = torch.linspace(-2, 2, 7) if values is None else torch.as_tensor(values, dtype=torch.float32)
    base = torch.zeros(model.style_dim) if base is None else torch.as_tensor(base, dtype=torch.float32).cpu()
    if base.shape != (model.style_dim,):
        raise ValueError(f"base must have {model.style_dim} entries, got shape {tuple(base.shape)}")
    z = base.expand(model.style_dim, len(values), model.style_dim).clone()
    dims = torch.arange(model.style_dim)
    z[dims, :, dims] = values[None, :].expand(model.style_dim, -1)
    return model.generate(torch.tensor(y, device=device), z.to(device))


@torch.no_grad()
def analogy_consistency(model: SSVAE, x: torch.Tensor) -> float:
    """How often the model's own classifier q(y|x) reads the intended digit in the analogies of ``x``:
    the fraction of decoded images (y', style of x) classified as y', over all images and all y'.
    1 means the decoder writes whichever digit it is given; 1/C (chance) means it ignores y and the
    style z decides the digit (label information has leaked into z)."""
    images = analogies(model, x)                                   # [B, C, D]
    predicted = model.classify(images.reshape(-1, images.shape[-1])).argmax(-1).view(images.shape[:2])
    intended = torch.arange(model.n_classes, device=predicted.device)
    return float((predicted == intended).float().mean())


@torch.no_grad()
def characteristic_path(model: CCVAE, x: torch.Tensor, steps: int = 3) -> torch.Tensor:
    """For a CCVAE: keep each image's z_\\c (posterior mean) and move z_c along the straight segments from the
    prior mean m_0 of class 0 through m_1, ... to m_{C-1}, ``steps`` points per segment (class means at
    columns 0, steps, 2·steps, ...). The continuous counterpart of :func:`analogies`: ``[B, (C−1)·steps + 1, D]``."""
    steps = check_int("steps", steps)
    means = model.conditional_prior()[0]                                             # [C, Dc]
    t = torch.arange(steps, dtype=means.dtype, device=means.device)[:, None] / steps
    path = torch.cat([(means[:-1, None] * (1 - t) + means[1:, None] * t).reshape(-1, means.shape[1]),
                      means[-1:]])                                                    # [P, Dc]
    rest = model.infer_style(x)                                                       # [B, D\c]
    z = torch.cat([path[None].expand(len(x), -1, -1), rest[:, None].expand(-1, len(path), -1)], dim=-1)
    return model.generate(z)
