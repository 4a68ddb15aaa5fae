"""The augmentation recipe (`AugmentConfig`) as batched tensor ops, on whatever device holds the faces.

`raylm.data.augment` runs the recipe with albumentations, one face at a time, in DataLoader workers; this module
runs the same recipe on a whole batch at once, so a GPU trial augments on the GPU and a CPU trial needs no per-face
Python. Parameters are drawn per face, with the distributions `augment.build_transform` gives albumentations
(`draw`), from a seeded CPU `torch.Generator`: the same seed gives the same parameters on any device, every choice
(flip or not, which faces to composite, which background) is made on the CPU, and a batch's per-face values reach
the device in one copy from pinned memory that does not wait (`upload`, as every host tensor the device path sends),
so a GPU is never made to report back and never waited on. Pixel noise (Gaussian noise, procedural backgrounds)
comes from a generator on the faces' device.

Geometry is one matrix per face: flip, scale and shift (`A.Affine`), rotation (`A.Rotate`) and the random crop
(`A.RandomCrop`) compose into a 3x3 map from prepared-face pixels to input-crop pixels; the image is resampled once
through its inverse (one bilinear `grid_sample`, where albumentations interpolates once per step) and the landmarks
go through the matrix itself, so they move exactly with the pixels. Coordinates put pixel (i, j)'s centre at x=i,
y=j, as everywhere in raylm.

Written here rather than taken from a library, and why:
- torchvision v2 transforms draw one set of parameters per call, so a batch would share one rotation; per-face
  parameters need a call per face.
- kornia's augmentation (per-face parameters, keypoints) resamples once per geometric step and relabels no landmarks
  on a flip. Its `AugmentationSequential` of the same recipe (flip, affine, crop, colour, gamma; 32 faces of 108 px
  to 96 px) ran at 0.6x this module's rate on one CPU thread (kornia 0.9, 2026-12-02), so it would be a dependency
  that costs speed.
- Colour: brightness, contrast and saturation as albumentations' `ColorJitter` defines them, in that fixed order
  (albumentations shuffles it per face); hue as a rotation of the chroma plane (YIQ), a 3x3 matrix per face, where
  albumentations shifts HSV hue: the same shift, without a colour-space round trip.
- Compositing draws procedural backgrounds (gradients, smooth noise, clutter of rectangles, disks and bars) like
  `composite.procedural_background`, batched; smooth noise takes its grid size from powers of two. A folder of
  background images is not held on the device: a run with one takes the loader path (`raylm.train.feed`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from raylm.data.augment import AugmentConfig, flip_permutation
from raylm.data.composite import FEATHER_SIGMA, REFERENCE_SIZE

GAMMA = (0.8, 1.2)  # A.RandomGamma's default gamma_limit (80, 120), p=0.5
BLUR_SIGMA = (0.5, 3.0)  # A.GaussianBlur's default sigma_limit; kernel 3 or 5 (blur_limit=(3, 5))
NOISE_STD = (0.2, 0.44)  # A.GaussNoise's default std_range, a fraction of 255, per channel
GREY = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as cv2 and albumentations convert
SHAPES = 9  # most clutter shapes on a procedural background, as composite.procedural_background draws


@dataclass(frozen=True)
class Draws:
    """Per-face augmentation parameters of one batch, each a (B,) CPU tensor; neutral values mean "off"."""

    flip: torch.Tensor  # bool
    scale: torch.Tensor  # (B, 2): x, y zoom factors, drawn apart as A.Affine does (keep_ratio=False)
    shift: torch.Tensor  # (B, 2): x, y shift as a fraction of the prepared size (whole pixels)
    angle: torch.Tensor  # degrees, counter-clockwise as A.Rotate
    crop: torch.Tensor  # (B, 2) int: the input crop's top-left corner in the warped prepared face
    brightness: torch.Tensor  # factors; 1: unchanged
    contrast: torch.Tensor
    saturation: torch.Tensor
    hue: torch.Tensor  # fraction of a full turn; 0: unchanged
    gamma: torch.Tensor  # 1: unchanged
    blur: torch.Tensor  # Gaussian sigma in px; 0: no blur
    blur_size: torch.Tensor  # int kernel size, 3 or 5
    noise: torch.Tensor  # noise std as a fraction of the full range; 0: none
    composite: torch.Tensor  # bool: paste onto a new background (the caller clears it for faces without a mask)
    background: torch.Tensor  # (B, 2 + SHAPES) int: kind (gradient, noise, clutter), noise grid, clutter shapes' kinds
    shapes: torch.Tensor  # int: how many clutter shapes

    def __len__(self) -> int:
        return len(self.flip)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _chance(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=generator, dtype=torch.float64) < p


def draw(config: AugmentConfig, n: int, prepared_size: int, generator: torch.Generator) -> Draws:
    """Parameters for `n` faces of `prepared_size` px, with the distributions the albumentations recipe uses."""
    one, zero = torch.ones(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)

    def factor(limit: float) -> torch.Tensor:
        return _uniform(n, 1 - limit, 1 + limit, generator) if limit else one

    margin = prepared_size - config.input_size
    gamma_on = _chance(n, 0.5, generator) if config.gamma else torch.zeros(n, dtype=torch.bool)
    blur_on = _chance(n, config.blur, generator)
    noise_on = _chance(n, config.noise, generator)
    shift = torch.zeros(n, 2, dtype=torch.float64)
    if config.shift:  # whole pixels, truncated towards 0 as A.Affine converts translate_percent
        pixels = _uniform(2 * n, -config.shift, config.shift, generator).reshape(n, 2) * prepared_size
        shift = torch.trunc(pixels) / prepared_size
    return Draws(
        flip=_chance(n, config.flip, generator),
        scale=torch.stack([factor(config.scale), factor(config.scale)], dim=1),
        shift=shift,
        angle=_uniform(n, -config.rotate, config.rotate, generator) if config.rotate else zero,
        crop=torch.randint(0, margin + 1, (n, 2), generator=generator),
        brightness=factor(config.brightness),
        contrast=factor(config.contrast),
        saturation=factor(config.saturation),
        hue=_uniform(n, -config.hue, config.hue, generator) if config.hue else zero,
        gamma=torch.where(gamma_on, _uniform(n, *GAMMA, generator), one),
        blur=torch.where(blur_on, _uniform(n, *BLUR_SIGMA, generator), zero),
        blur_size=torch.where(blur_on, 3 + 2 * torch.randint(0, 2, (n,), generator=generator), 0),
        noise=torch.where(noise_on, _uniform(n, *NOISE_STD, generator), zero),
        composite=_chance(n, config.composite, generator),
        **_background_choices(n, generator if config.composite else None),
    )


def _background_choices(n: int, generator: torch.Generator | None) -> dict[str, torch.Tensor]:
    """The discrete choices of `n` procedural backgrounds, drawn here so the device never reports them back."""
    if generator is None:  # no compositing: nothing drawn, so the other parameters' stream is the same
        return {
            "background": torch.zeros(n, 2 + SHAPES, dtype=torch.int64),
            "shapes": torch.zeros(n, dtype=torch.int64),
        }
    kind = torch.randint(0, 3, (n, 1), generator=generator)  # gradient, smooth noise, clutter
    cells = 2 ** torch.randint(1, 6, (n, 1), generator=generator)  # smooth noise on 2 to 32 cells
    shape_kinds = torch.randint(0, 3, (n, SHAPES), generator=generator)  # rectangle, disk, bar
    return {
        "background": torch.cat([kind, cells, shape_kinds], dim=1),
        "shapes": torch.randint(3, SHAPES + 1, (n,), generator=generator),
    }


def geometry(draws: Draws, prepared_size: int) -> torch.Tensor:
    """(B, 3, 3) float64 maps from prepared-face pixels to input-crop pixels: flip, scale and shift, rotate, crop."""
    n, centre = len(draws), (prepared_size - 1) / 2
    eye = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    flip = eye.clone()
    flip[:, 0, 0] = torch.where(draws.flip, -1.0, 1.0)
    flip[:, 0, 2] = torch.where(draws.flip, prepared_size - 1.0, 0.0)
    affine = eye.clone()  # about the centre, then shifted (A.Affine's translate_percent of the size)
    affine[:, 0, 0], affine[:, 1, 1] = draws.scale[:, 0], draws.scale[:, 1]
    affine[:, :2, 2] = centre * (1 - draws.scale) + draws.shift * prepared_size
    radians = torch.deg2rad(draws.angle)
    cos, sin = torch.cos(radians), torch.sin(radians)
    rotate = eye.clone()  # A.Rotate's direction: x' = c + cos dx + sin dy, y' = c - sin dx + cos dy
    rotate[:, 0, 0], rotate[:, 0, 1], rotate[:, 1, 0], rotate[:, 1, 1] = cos, sin, -sin, cos
    rotate[:, 0, 2] = centre - cos * centre - sin * centre
    rotate[:, 1, 2] = centre + sin * centre - cos * centre
    crop = eye.clone()
    crop[:, :2, 2] = -draws.crop.to(torch.float64)
    return crop @ rotate @ affine @ flip


def upload(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device` without waiting for it: on CUDA, copied from pinned memory with `non_blocking`,
    queued behind the work already on the stream (a copy from pageable memory would wait for all of it)."""
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def _on(device: torch.device, **values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Small per-face CPU tensors as float32 on `device`, in one copy (one transfer per batch, not one per value)."""
    flat = torch.cat([value.reshape(len(value), -1).to(torch.float32) for value in values.values()], dim=1)
    flat = upload(flat, device)
    widths = [value[0].numel() for value in values.values()]
    parts = torch.split(flat, widths, dim=1)
    return {name: part.reshape(value.shape) for (name, value), part in zip(values.items(), parts, strict=True)}


def warp(images: torch.Tensor, inverse: torch.Tensor, size: int) -> torch.Tensor:
    """Resample (B, C, S, S) images through (B, 2, 3) maps from output to source pixels; zeros outside."""
    n, _, height, width = images.shape
    axis = torch.arange(size, device=images.device, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    grid = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)
    source = grid @ inverse.transpose(1, 2)  # (B, size*size, 2) in source pixels
    scale = upload(torch.tensor([2 / (width - 1), 2 / (height - 1)]), images.device)
    normalised = (source * scale - 1).reshape(n, size, size, 2)
    return F.grid_sample(images, normalised, mode="bilinear", padding_mode="zeros", align_corners=True)


def move_points(points: torch.Tensor, matrices: torch.Tensor, flip: torch.Tensor, any_flip: bool) -> torch.Tensor:
    """(B, P, 2) landmarks through (B, 2, 3) maps, relabelled (iBUG left <-> right) where `flip` (B,) is set."""
    moved = points @ matrices[:, :, :2].transpose(1, 2) + matrices[:, None, :, 2]
    if any_flip:
        order = upload(torch.as_tensor(flip_permutation(points.shape[1])), points.device)
        moved = torch.where(flip[:, None, None] > 0, moved[:, order], moved)
    return moved


def _grey(images: torch.Tensor) -> torch.Tensor:
    if images.shape[1] == 1:
        return images
    weights = upload(torch.tensor(GREY, dtype=images.dtype), images.device).view(1, 3, 1, 1)
    return (images * weights).sum(1, keepdim=True)


def _per_face(values: torch.Tensor) -> torch.Tensor:
    return values.view(-1, 1, 1, 1)


def colour(images: torch.Tensor, factors: dict[str, torch.Tensor]) -> torch.Tensor:
    """Brightness, contrast, saturation and hue of (B, C, H, W) images in [0, 1] (grey faces: the first two).

    `factors` hold per-face brightness, contrast and saturation factors and (B, 3, 3) hue rotations, on the device.
    """
    images = (images * _per_face(factors["brightness"])).clamp_(0, 1)
    mean = _grey(images).mean(dim=(1, 2, 3), keepdim=True)
    images = (mean + _per_face(factors["contrast"]) * (images - mean)).clamp_(0, 1)
    if images.shape[1] == 3:
        grey = _grey(images)
        images = (grey + _per_face(factors["saturation"]) * (images - grey)).clamp_(0, 1)
        images = torch.einsum("bij,bjhw->bihw", factors["hue"], images).clamp_(0, 1)
    return images


def hue_rotations(turns: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) RGB maps rotating each face's chroma by `turns` of a full circle in YIQ (luma kept)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
    angle = 2 * math.pi * turns
    rotation = torch.eye(3, dtype=torch.float64).repeat(len(turns), 1, 1)
    rotation[:, 1, 1], rotation[:, 1, 2] = torch.cos(angle), -torch.sin(angle)
    rotation[:, 2, 1], rotation[:, 2, 2] = torch.sin(angle), torch.cos(angle)
    return torch.linalg.inv(to_yiq) @ rotation @ to_yiq


def blur_kernels(sigma: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """(B, 5) normalised Gaussian taps: `size` 3 or 5 (a 3-tap kernel inside 5 taps), sigma 0 the identity."""
    offsets = torch.arange(-2, 3, dtype=torch.float64)
    kernels = torch.exp(-(offsets**2) / (2 * sigma.clamp(min=1e-6)[:, None] ** 2))
    kernels = torch.where(offsets.abs() <= (size[:, None] - 1) / 2, kernels, 0)
    kernels = torch.where(sigma[:, None] > 0, kernels, (offsets == 0).double())
    return kernels / kernels.sum(1, keepdim=True)


def blur(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """A separable blur of each face (B, C, H, W) by its own odd-length kernel (B, K), reflected borders as cv2's."""
    n, channels, height, width = images.shape
    taps = kernels.shape[1]
    weights = kernels.repeat_interleave(channels, 0)  # one kernel per (face, channel) plane
    planes = F.pad(images.reshape(1, n * channels, height, width), (taps // 2,) * 4, mode="reflect")
    planes = F.conv2d(planes, weights.view(-1, 1, 1, taps), groups=n * channels)
    planes = F.conv2d(planes, weights.view(-1, 1, taps, 1), groups=n * channels)
    return planes.reshape(n, channels, height, width)


def noise(images: torch.Tensor, std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise per pixel and channel, std (B,) per face (0: none); clipped to [0, 1]."""
    values = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
    return (images + values * _per_face(std)).clamp_(0, 1)


def gamma(images: torch.Tensor, exponents: torch.Tensor) -> torch.Tensor:
    return images.pow(_per_face(exponents))


def composite(images: torch.Tensor, masks: torch.Tensor, draws: Draws, generator: torch.Generator) -> torch.Tensor:
    """Faces `draws.composite` picks, pasted by their masks (B, 1, S, S) uint8 onto new procedural backgrounds."""
    chosen = draws.composite.nonzero().flatten()  # on the CPU: the device is never asked
    index = upload(chosen, images.device)
    size = images.shape[-1]
    choices, shapes = draws.background[chosen], draws.shapes[chosen]
    background = procedural_backgrounds(len(chosen), size, generator, choices, shapes, images.device)
    if images.shape[1] == 1:
        background = _grey(background)
    spread = FEATHER_SIGMA[1] - FEATHER_SIGMA[0]
    sigma = (FEATHER_SIGMA[0] + spread * _rand(len(chosen), generator, images.device)) * size / REFERENCE_SIZE
    alpha = gaussian_blur(masks[index].float().div_(255), sigma, FEATHER_SIGMA[1] * size / REFERENCE_SIZE)
    images = images.clone()
    images[index] = background + alpha * (images[index] - background)
    return images


def _rand(n: int, generator: torch.Generator, device: torch.device, *shape: int) -> torch.Tensor:
    return torch.rand((n, *shape), generator=generator, device=device)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, largest: float) -> torch.Tensor:
    """A Gaussian blur of (B, C, H, W), its own sigma (B,) per face (at most `largest`), reflected borders."""
    radius = max(1, math.ceil(3 * largest))
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-(offsets**2) / (2 * sigma[:, None].to(images.dtype) ** 2))
    return blur(images, kernels / kernels.sum(1, keepdim=True))


def _muted(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """(n, 3) colours in [0, 1] pulled towards their grey by 20-80%, like walls and skies."""
    colours = _rand(n, generator, device, 3)
    mean = colours.mean(1, keepdim=True)
    return mean + (colours - mean) * (0.2 + 0.6 * _rand(n, generator, device, 1))


def procedural_backgrounds(
    n: int, size: int, generator: torch.Generator, choices: torch.Tensor, shapes: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """(n, 3, size, size) RGB backgrounds in [0, 1] on `device` (drawn by `generator`, on it too), with grain: per
    `choices` (`Draws`), a gradient, smooth noise or blurred clutter each."""
    kind, cells = choices[:, 0], choices[:, 1]
    on_device = _on(device, kind=kind, shape_kinds=choices[:, 2:], shapes=shapes)
    axis = torch.linspace(-0.5, 0.5, size, device=device)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    # Gradients: a ramp at a random angle between two muted colours.
    angle = 2 * math.pi * _rand(n, generator, device)
    ramp = (torch.cos(angle)[:, None, None] * xs + torch.sin(angle)[:, None, None] * ys + 0.5)[:, None]
    start, end = _muted(n, generator, device), _muted(n, generator, device)
    pictures = start[:, :, None, None] + ramp * (end - start)[:, :, None, None]
    # Smooth noise: Gaussian values on a coarse grid, upsampled; light plus a faint tint.
    light = (15 + 45 * _rand(n, generator, device)) / 255
    tint = 12 / 255 * _rand(n, generator, device)
    textured = _muted(n, generator, device)[:, :, None, None].expand(n, 3, size, size).clone()
    for count in cells.unique().tolist():  # on the CPU
        rows = upload((cells == count).nonzero().flatten(), device)
        grid = torch.randn((len(rows), 4, count, count), generator=generator, device=device)
        smooth = F.interpolate(grid, size=(size, size), mode="bicubic", align_corners=False)
        textured[rows] += light[rows, None, None, None] * smooth[:, :1] + tint[rows, None, None, None] * smooth[:, 1:]
    kinds = on_device["kind"][:, None, None, None]
    pictures = torch.where(kinds == 1, textured, pictures)
    clutter = _clutter(size, generator, on_device["shape_kinds"], on_device["shapes"])
    pictures = torch.where(kinds == 2, clutter, pictures)
    grain = 6 / 255 * _rand(n, generator, device)[:, None, None, None]
    pictures = pictures + grain * torch.randn((n, 1, size, size), generator=generator, device=device)
    return pictures.clamp_(0, 1)


def _clutter(size: int, generator: torch.Generator, kinds: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Rectangles, disks and bars (`kinds` (n, SHAPES) on the device, the first `count` of them) over a muted
    colour, blurred."""
    n, device = len(kinds), kinds.device
    base = _muted(n, generator, device)
    pictures = base[:, :, None, None].expand(n, 3, size, size).clone()
    axis = torch.arange(size, device=device, dtype=torch.float32)
    ys, xs = torch.meshgrid(axis, axis, indexing="ij")
    for k in range(kinds.shape[1]):
        colour = (_rand(n, generator, device, 3) + base) / 2
        a, b = (
            (-0.2 + 1.4 * _rand(n, generator, device, 2)) * size,
            (-0.2 + 1.4 * _rand(n, generator, device, 2)) * size,
        )
        radius = (0.05 + 0.25 * _rand(n, generator, device)) * size
        width = 1 + _rand(n, generator, device) * max(1, size // 16 - 1)
        ax, ay, bx, by = (v[:, None, None] for v in (a[:, 0], a[:, 1], b[:, 0], b[:, 1]))
        rectangle = (xs >= torch.minimum(ax, bx)) & (xs <= torch.maximum(ax, bx))
        rectangle &= (ys >= torch.minimum(ay, by)) & (ys <= torch.maximum(ay, by))
        disk = (xs - ax) ** 2 + (ys - ay) ** 2 <= radius[:, None, None] ** 2
        dx, dy = bx - ax, by - ay  # a bar: points within width/2 of the segment a-b
        t = (((xs - ax) * dx + (ys - ay) * dy) / (dx**2 + dy**2).clamp(min=1e-6)).clamp(0, 1)
        bar = (xs - ax - t * dx) ** 2 + (ys - ay - t * dy) ** 2 <= (width[:, None, None] / 2) ** 2
        kind = kinds[:, k, None, None]
        inside = torch.where(kind == 0, rectangle, torch.where(kind == 1, disk, bar)) & (k < count)[:, None, None]
        pictures = torch.where(inside[:, None], colour[:, :, None, None], pictures)
    return gaussian_blur(pictures, 0.5 + 2.0 * _rand(n, generator, device), largest=2.5)


def augment_batch(
    images: torch.Tensor,
    points: torch.Tensor,
    config: AugmentConfig,
    draws: Draws,
    generator: torch.Generator,
    masks: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe on a batch: (B, C, S, S) uint8 faces and (B, P, 2) landmarks in prepared pixels, on one device.

    Returns (B, C, input_size, input_size) float images in [-1, 1] (the networks' input)
    and the landmarks in input-crop pixels. `masks` (B, 1, S, S) uint8, 255 on the
    person, are what compositing pastes the faces `draws.composite` picks by.
    `generator` (on the faces' device) draws pixel noise. Per-face values reach the
    device in one non-blocking copy and every choice is made on the CPU, so the device
    is never waited on.
    """
    matrices = geometry(draws, images.shape[-1])
    per_face = _on(
        images.device,
        forward=matrices[:, :2],
        inverse=torch.linalg.inv(matrices)[:, :2],
        flip=draws.flip,
        brightness=draws.brightness,
        contrast=draws.contrast,
        saturation=draws.saturation,
        hue=hue_rotations(draws.hue),
        gamma=draws.gamma,
        blur=blur_kernels(draws.blur, draws.blur_size),
        noise=draws.noise,
    )
    faces = images.float().div_(255)
    if masks is not None and bool(draws.composite.any()):
        faces = composite(faces, masks, draws, generator)
    faces = warp(faces, per_face["inverse"], config.input_size)
    faces = gamma(colour(faces, per_face), per_face["gamma"])
    if bool((draws.blur > 0).any()):
        faces = blur(faces, per_face["blur"])
    if bool((draws.noise > 0).any()):
        faces = noise(faces, per_face["noise"], generator)
    moved = move_points(points, per_face["forward"], per_face["flip"], bool(draws.flip.any()))
    return faces.mul_(2).sub_(1), moved
