"""Transfer-set augmentation of Urban et al. (2017), §2.5, as pure batch functions.

Per image, in this order:

1. HSV jitter: ``h' = (h + dh) mod 1``, ``s' = clip(s*a_s + d_s)``, ``v' = clip(v*a_v + d_v)``.
2. Scale jitter: square crop of side ``S ~ U{scale_min..32}`` at ``x0, y0 ~ U{0..32-S}``,
   resized back to 32x32 with the paper's "third-order spline interpolation": per channel,
   exactly ``scipy.ndimage.zoom(crop, 32 / S, order=3)`` with zoom's defaults, but as a
   32×S matrix per S applied on the images' device, without scipy (see below).
3. Left-right mirror with p = 0.5.

Values are clamped back into [0, 1] after steps 2 and 3 (as before): the interpolating
spline overshoots at sharp edges in the image (its prefilter has negative lobes).

The resize matches scipy's ``zoom`` with its defaults (``order=3, mode='constant', cval=0,
prefilter=True, grid_mode=False``; read in scipy 1.17.1's source) and nothing else: the
paper names no setting beyond "third-order spline", which is scipy.ndimage's wording
(``order=3``), so the defaults are the most likely reading and what the per-image baseline in
``bench/bench_augment.py`` runs. What those defaults mean for an S×S crop:

* ``grid_mode=False``: corner pixel *centres* are aligned, output pixel ``i`` samples input
  coordinate ``i * (S-1)/31`` (like ``align_corners=True``), not ``(i + 0.5) * S/32 - 0.5``.
* Prefilter: the cubic B-spline coefficients ``c`` solve ``A c = v`` with the whole-sample
  symmetric ("mirror", ``d c b | a b c d | c b a``) extension: scipy has no prefilter for
  ``'constant'`` and uses the mirror one for it (``ni_splines.c: apply_filter``), exactly,
  not truncated.
* Evaluation: the four taps of the cubic B-spline that fall outside ``0..S-1`` are mirrored
  too (``_get_spline_boundary_mode`` maps ``'constant'`` to mirror).
* ``cval`` never enters: it is only used for sample coordinates outside ``[0, S-1]``, and
  ``31 * ((S-1)/31) <= S-1`` holds in float64 for every S <= 32, so no output falls outside.
* ``S == 32`` is zoom 1.0, which scipy returns unchanged (no filtering): exactly the identity.
  ``S == 1`` is not prefiltered (a single sample) and gives a constant image.

Sampling is split from applying: :func:`sample_params` returns a dict of small per-image
tensors and :func:`apply_params` is a deterministic function of ``(images, params)``, so a
replay only has to store the params to rebuild the exact same floats (on the same device).
Until 2026-11-24 step 2 was a Keys bicubic (``F.interpolate``'s kernel, a = -0.75, pixel
areas aligned): params stored before then replay to slightly different images (those with
S < 32), so labels stored with such params were computed on images this code no longer makes.

Everything is vectorised over the batch; images never leave their device.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

__all__ = [
    "IMAGE_SIZE",
    "IMAGE_SHAPE",
    "is_image_shape",
    "PARAM_KEYS",
    "AugmentConfig",
    "crop_range",
    "sample_params",
    "identity_params",
    "apply_params",
    "augment",
    "to_uint8",
    "standardize",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "spline_resize_matrix",
]

IMAGE_SIZE = 32
IMAGE_SHAPE = (3, IMAGE_SIZE, IMAGE_SIZE)  # CIFAR's; an image folder's may be 3×S×S (--image-size S)
# Every params dict has exactly these keys (fixed schema, so replay files can store them as-is).
PARAM_KEYS = ("hue", "sat_scale", "sat_shift", "val_scale", "val_shift", "size", "x0", "y0", "flip")
_FLOAT_KEYS = PARAM_KEYS[:5]
_INT_KEYS = ("size", "x0", "y0")

# Cubic B-spline at integer offsets -1, 0, 1 (zero beyond): the interpolation condition row.
_BSPLINE3_AT_INTEGERS = ((-1, 1.0 / 6.0), (0, 4.0 / 6.0), (1, 1.0 / 6.0))


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges. Defaults are the paper's fixed transfer-set setting.

    ``AugmentConfig(**cfg.to_dict())`` and ``AugmentConfig(**json.load(f))`` round-trip.
    """

    dh: float = 0.06  # hue shift ~ U(-dh, dh), hue in [0, 1)
    ds: float = 0.26  # saturation shift ~ U(-ds, ds)
    dv: float = 0.20  # value shift ~ U(-dv, dv)
    as_: float = 0.21  # saturation scale ~ U(1/(1+as_), 1+as_)
    av: float = 0.13  # value scale ~ U(1/(1+av), 1+av)
    scale_min: int = 24  # crop side S ~ U{scale_min..32}; 32 disables scale jitter (other sizes: crop_range)
    mirror: bool = True
    hsv: bool = True  # False: HSV params are exactly the identity and the HSV stage is skipped

    def __post_init__(self) -> None:
        for name in ("dh", "ds", "dv", "as_", "av"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"AugmentConfig.{name} must be a finite number >= 0, got {v!r}")
        if isinstance(self.scale_min, bool) or not isinstance(self.scale_min, int) or not 1 <= self.scale_min <= IMAGE_SIZE:
            raise ValueError(f"AugmentConfig.scale_min must be an int in 1..{IMAGE_SIZE}, got {self.scale_min!r}")
        for name in ("mirror", "hsv"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"AugmentConfig.{name} must be a bool, got {getattr(self, name)!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AugmentConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:  # a typo in a config file should not silently fall back to a default
            raise ValueError(f"unknown AugmentConfig keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def identity(cls) -> "AugmentConfig":
        """A config whose augmentation is the identity (useful for tests and baselines)."""
        return cls(dh=0.0, ds=0.0, dv=0.0, as_=0.0, av=0.0, scale_min=IMAGE_SIZE, mirror=False, hsv=False)


# ----------------------------------------------------------------------------------------
# Parameter sampling
# ----------------------------------------------------------------------------------------


def is_image_shape(shape) -> bool:
    """Is `shape` (C, H, W) one of square RGB images, which the augmentation takes (not feature rows)?"""
    return len(shape) == 3 and shape[0] == 3 and shape[1] == shape[2] >= 1


def crop_range(cfg: AugmentConfig, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """(smallest, largest) crop side for ``size``×``size`` images. ``scale_min`` is stated for 32×32 (the
    paper's 24 of 32); other sizes keep its fraction of the side, rounded (48 of 64, 6 of 8), at least 1."""
    if size == IMAGE_SIZE:
        return cfg.scale_min, IMAGE_SIZE
    return max(1, min(size, math.floor(cfg.scale_min * size / IMAGE_SIZE + 0.5))), size  # halves round up


def sample_params(
    n: int,
    cfg: AugmentConfig,
    generator: torch.Generator | None,
    device: torch.device | str = "cpu",
    size: int = IMAGE_SIZE,
) -> dict[str, torch.Tensor]:
    """Draw per-image augmentation parameters.

    Exactly one ``torch.rand((9, n))`` is drawn from ``generator`` per call, whatever the
    config (disabled parts are overwritten, not skipped), so the stream position after a call
    depends only on ``n``. Draws happen on the generator's device and are then moved to
    ``device``: a CPU generator with a given seed gives the same params for CPU and CUDA data.

    Returns float32 ``hue, sat_scale, sat_shift, val_scale, val_shift``; int64 ``size, x0, y0``;
    bool ``flip``; all of shape ``(n,)``. ``size``: the images' side (crops from crop_range).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    gen_device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand((9, n), generator=generator, device=gen_device, dtype=torch.float32)

    def sym(row: torch.Tensor, d: float) -> torch.Tensor:  # U(-d, d)
        return (2.0 * row - 1.0) * d

    def scale(row: torch.Tensor, a: float) -> torch.Tensor:  # U(1/(1+a), 1+a); a=0 gives exactly 1
        lo, hi = 1.0 / (1.0 + a), 1.0 + a
        return lo + row * (hi - lo)

    if cfg.hsv:
        hue, sat_shift, val_shift = sym(u[0], cfg.dh), sym(u[2], cfg.ds), sym(u[4], cfg.dv)
        sat_scale, val_scale = scale(u[1], cfg.as_), scale(u[3], cfg.av)
    else:
        zeros = torch.zeros(n, dtype=torch.float32, device=gen_device)
        hue, sat_shift, val_shift = zeros, zeros.clone(), zeros.clone()
        sat_scale, val_scale = torch.ones_like(zeros), torch.ones_like(zeros)

    # Discrete uniforms via floor(u * k): per-image upper bounds (32 - S) rule out randint.
    # Rows: 0 hue, 1 sat_scale, 2 sat_shift, 3 val_scale, 4 val_shift, 5 size, 6 x0, 7 y0, 8 flip.
    lo, side = crop_range(cfg, size)
    crop = (lo + (u[5] * (side - lo + 1)).floor().long()).clamp_max(side)
    span = side - crop + 1  # number of valid offsets per image
    x0 = torch.minimum((u[6] * span).floor().long(), span - 1)
    y0 = torch.minimum((u[7] * span).floor().long(), span - 1)
    flip = u[8] < 0.5 if cfg.mirror else torch.zeros(n, dtype=torch.bool, device=gen_device)

    out = {
        "hue": hue, "sat_scale": sat_scale, "sat_shift": sat_shift,
        "val_scale": val_scale, "val_shift": val_shift,
        "size": crop, "x0": x0, "y0": y0, "flip": flip,
    }
    return {k: v.contiguous().to(device) for k, v in out.items()}


def identity_params(n: int, device: torch.device | str = "cpu", size: int = IMAGE_SIZE) -> dict[str, torch.Tensor]:
    """Params that leave images unchanged (up to HSV round-trip float error); edit to taste."""
    z = torch.zeros(n, dtype=torch.float32, device=device)
    return {
        "hue": z.clone(), "sat_scale": torch.ones_like(z), "sat_shift": z.clone(),
        "val_scale": torch.ones_like(z), "val_shift": z.clone(),
        "size": torch.full((n,), size, dtype=torch.int64, device=device),
        "x0": torch.zeros(n, dtype=torch.int64, device=device),
        "y0": torch.zeros(n, dtype=torch.int64, device=device),
        "flip": torch.zeros(n, dtype=torch.bool, device=device),
    }


# ----------------------------------------------------------------------------------------
# Colour space (colorsys semantics, vectorised; channel dim is -3)
# ----------------------------------------------------------------------------------------


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV for float tensors in [0, 1] with channels at dim -3 (e.g. N×3×H×W).

    Matches ``colorsys.rgb_to_hsv``: grey pixels get h = s = 0; ties pick r, then g, then b.
    Hue is in [0, 1).
    """
    r, g, b = x.unbind(-3)
    maxc = torch.maximum(torch.maximum(r, g), b)
    minc = torch.minimum(torch.minimum(r, g), b)
    delta = maxc - minc
    chroma = delta > 0
    safe = torch.where(chroma, delta, torch.ones_like(delta))  # no 0/0 in the discarded branch
    s = torch.where(chroma, delta / torch.where(chroma, maxc, torch.ones_like(maxc)), torch.zeros_like(delta))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    h = torch.where(r == maxc, bc - gc, torch.where(g == maxc, 2.0 + rc - bc, 4.0 + gc - rc))
    h = _wrap01(h / 6.0)
    h = torch.where(chroma, h, torch.zeros_like(h))
    return torch.stack((h, s, maxc), dim=-3)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """HSV -> RGB, inverse of :func:`rgb_to_hsv` (any real hue; it is taken mod 1).

    Uses the branch-free form c_n = v - v*s*clamp(min(k, 4-k), 0, 1), k = (n + 6h) mod 6,
    n = 5, 3, 1 for R, G, B, which equals colorsys's six-sector table but needs no gathers.
    """
    h, s, v = x.unbind(-3)
    h6 = torch.remainder(h, 1.0) * 6.0
    vs = v * s

    def chan(n: float) -> torch.Tensor:
        k = torch.remainder(h6 + n, 6.0)
        return v - vs * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)

    return torch.stack((chan(5.0), chan(3.0), chan(1.0)), dim=-3)


def _wrap01(h: torch.Tensor) -> torch.Tensor:
    # remainder(-1e-9, 1) rounds to exactly 1.0 in float32; fold it back so hue stays in [0, 1).
    h = torch.remainder(h, 1.0)
    return torch.where(h >= 1.0, torch.zeros_like(h), h)


# ----------------------------------------------------------------------------------------
# Crop + spline resize + mirror as per-image linear maps
# ----------------------------------------------------------------------------------------


def _mirror_index(i: int, n: int) -> int:
    """scipy's ``'mirror'`` extension of an integer sample index (period 2n - 2)."""
    if n == 1:
        return 0
    period = 2 * n - 2
    i %= period
    return period - i if i >= n else i


def _bspline3_weights(x: float) -> tuple[float, float, float, float]:
    """Cubic B-spline weights of the taps at floor(t) - 1 .. floor(t) + 2, for x = t - floor(t).

    Same expressions as scipy's ``get_spline_interpolation_weights`` (order 3), last weight
    included as ``1 - sum(others)``, so the floats agree with scipy's to the last bit or two.
    """
    z = 1.0 - x
    w1 = (x * x * (x - 2.0) * 3.0 + 4.0) / 6.0
    w2 = (z * z * (z - 2.0) * 3.0 + 4.0) / 6.0
    w0 = z * z * z / 6.0
    return w0, w1, w2, 1.0 - w0 - w1 - w2


def spline_resize_matrix(in_size: int, out_size: int = IMAGE_SIZE, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``out_size × in_size`` matrix M with ``M @ v @ M.T == scipy.ndimage.zoom(v, out/in, order=3)``.

    For a 2-D ``in_size × in_size`` array ``v`` (zoom is separable, so M is the 1-D operator;
    conventions in the module docstring). ``M = B @ inv(A)``: ``A`` (in × in) is the B-spline
    interpolation condition with mirrored edges (the prefilter), ``B`` (out × in) evaluates the
    cubic B-spline at ``i * (in-1)/(out-1)`` with mirrored taps. Built in float64 on the CPU.
    ``in_size == out_size`` gives exactly the identity, as scipy does for a zoom of 1.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be >= 1, got {in_size}, {out_size}")
    if in_size == out_size:  # scipy's early exit for zoom == 1: no prefilter, input returned as is
        return torch.eye(out_size, dtype=dtype)
    a = torch.zeros(in_size, in_size, dtype=torch.float64)
    for i in range(in_size):
        for d, w in _BSPLINE3_AT_INTEGERS:
            a[i, _mirror_index(i + d, in_size)] += w
    # scipy's zoom factor with grid_mode=False; it uses 1 when the output has a single pixel.
    step = (in_size - 1) / (out_size - 1) if out_size > 1 else 1.0
    b = torch.zeros(out_size, in_size, dtype=torch.float64)
    for o in range(out_size):
        t = o * step  # same float64 product as scipy's NI_ZoomShift, so the same floor()
        f = math.floor(t)
        for k, w in enumerate(_bspline3_weights(t - f)):
            b[o, _mirror_index(f - 1 + k, in_size)] += w
    # B @ inv(A) without forming the inverse; A is diagonally dominant (condition number ~3).
    return torch.linalg.solve(a, b, left=False).to(dtype)


_BANKS: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}


def _resize_bank(device: torch.device, dtype: torch.dtype, side: int = IMAGE_SIZE) -> torch.Tensor:
    """(side, side, side), 32 for CIFAR: bank[S-1] is the side×S resize matrix zero-padded to side columns.

    Built once per (device, dtype, side) for every S (side small solves, tens of ms at 32) and gathered
    per image.
    """
    key = (device, dtype, side)
    bank = _BANKS.get(key)
    if bank is None:
        bank = torch.zeros(side, side, side, dtype=torch.float64)
        for s in range(1, side + 1):
            bank[s - 1, :, :s] = spline_resize_matrix(s, side)
        bank = bank.to(device=device, dtype=dtype)
        _BANKS[key] = bank
    return bank


def _axis_matrices(size: torch.Tensor, off: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Per-image (N, side, side) R with R[i, r, c] = M_{S_i}[r, c - off_i] inside the crop, else 0."""
    n, side = size.shape[0], bank.shape[-1]
    m = bank[size - 1]  # (N, side, side)
    col = torch.arange(side, device=size.device)[None, :] - off[:, None]  # (N, side)
    valid = (col >= 0) & (col < size[:, None])
    col = col.clamp(0, side - 1)
    r = torch.gather(m, 2, col[:, None, :].expand(n, side, side))
    return r * valid[:, None, :].to(r.dtype)


def _geometric(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    # float64 matmul on purpose: it never goes through TF32 (which callers often enable
    # globally for training and would cost ~1e-3 here), makes S=32 an exact identity, and the
    # final rounding to float32 hides summation-order differences between devices and batch
    # sizes, which is what makes replay bit-stable. It costs ~0.03 ms/image more than float32 on
    # 2 CPU cores. MPS has no float64, so it falls back to float32 there.
    dtype = torch.float32 if x.device.type == "mps" else torch.float64
    n, c, h, w = x.shape  # square (_check_batch): side h = w, 32 for CIFAR
    bank = _resize_bank(x.device, dtype, w)
    ry = _axis_matrices(p["size"], p["y0"], bank)
    rx = _axis_matrices(p["size"], p["x0"], bank)
    # Mirroring after the resize = reversing the output columns = reversing R_x's rows.
    rx = torch.where(p["flip"][:, None, None], rx.flip(1), rx)
    # Two bmm's over the batch with the channels folded into the matrix dimension (N products of
    # 96×32 @ 32×32, then 32×32 @ 32×96) rather than 3N broadcast 32×32 products.
    cols = torch.bmm(x.to(dtype).reshape(n, c * h, w), rx.transpose(1, 2))      # (N, C*H, W): along x
    cols = cols.reshape(n, c, h, w).transpose(1, 2).reshape(n, h, c * w)
    out = torch.bmm(ry, cols)                                                    # (N, H, C*W): along y
    out = out.reshape(n, h, c, w).transpose(1, 2)
    return out.reshape(n, c, h, w).to(torch.float32)


# ----------------------------------------------------------------------------------------
# Public batch ops
# ----------------------------------------------------------------------------------------


def _as_float01(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    if not x.is_floating_point():
        raise TypeError(f"expected uint8 or float images, got {x.dtype}")
    return x.to(torch.float32)


def _check_batch(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] != x.shape[3] or x.shape[2] < 1:
        raise ValueError(f"expected N×3×S×S images (S = {IMAGE_SIZE} for CIFAR), got {tuple(x.shape)}")


def apply_params(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Apply HSV jitter, crop + spline resize and mirror with the given per-image params.

    ``x``: uint8 or float in [0, 1], N×3×S×S (32×32 for CIFAR; the params' crops must fit S).
    Returns float32 in [0, 1] on ``x.device``.
    Deterministic in ``(x, p)`` on a given device, and needs nothing but the params: images
    whose HSV params are exactly the identity (hue 0, scales 1, shifts 0 -- what
    ``hsv=False`` samples) bypass the HSV round trip per image, so
    ``AugmentConfig.identity()`` params return the input bit for bit.
    """
    return _apply(x, p, hsv=True)


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Sample params for ``len(x)`` images and apply them (float32 [0, 1], on x.device).

    Bit-identical to ``apply_params(x, sample_params(len(x), cfg, generator, x.device))``.
    """
    p = sample_params(len(x), cfg, generator, x.device, x.shape[-1] if x.ndim == 4 else IMAGE_SIZE)
    # With hsv=False every image would bypass HSV anyway; skipping it saves the compute only.
    return _apply(x, p, hsv=cfg.hsv)


def _apply(x: torch.Tensor, p: dict[str, torch.Tensor], hsv: bool) -> torch.Tensor:
    _check_batch(x)
    missing = [k for k in PARAM_KEYS if k not in p]
    if missing:
        raise KeyError(f"augmentation params missing keys: {missing}")
    n = x.shape[0]
    p = {k: p[k].to(x.device) for k in PARAM_KEYS}  # params are tiny; moving them is free
    for k, v in p.items():
        if v.shape != (n,):
            raise ValueError(f"param {k!r} has shape {tuple(v.shape)}, expected ({n},)")
    for k in _INT_KEYS:
        p[k] = p[k].long()
    p["flip"] = p["flip"].bool()
    for k in _FLOAT_KEYS:
        p[k] = p[k].float()

    x = _as_float01(x)
    if n == 0:
        return x.clone()

    # 1. HSV jitter (whole image, before cropping, as in the paper).
    if hsv:
        col = lambda t: t[:, None, None]  # noqa: E731 - broadcast (N,) over H×W
        h, s, v = rgb_to_hsv(x).unbind(1)
        h = _wrap01(h + col(p["hue"]))
        s = (s * col(p["sat_scale"]) + col(p["sat_shift"])).clamp(0.0, 1.0)
        v = (v * col(p["val_scale"]) + col(p["val_shift"])).clamp(0.0, 1.0)
        jittered = hsv_to_rgb(torch.stack((h, s, v), dim=1))
        # Per-image select instead of a data-dependent branch: no host sync on GPU.
        trivial = (
            (p["hue"] == 0) & (p["sat_scale"] == 1) & (p["sat_shift"] == 0)
            & (p["val_scale"] == 1) & (p["val_shift"] == 0)
        )
        x = torch.where(trivial[:, None, None, None], x, jittered)

    # 2.+3. crop, spline resize, mirror. The interpolating spline overshoots (its prefilter
    # has negative lobes, like the bicubic kernel before it), so clamp back into [0, 1], as
    # the per-image scipy pipeline does after its zoom (np.clip in bench_augment.py).
    return _geometric(x, p).clamp_(0.0, 1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Float [0, 1] -> uint8 with round-half-to-even and clamping."""
    return (x.to(torch.float32) * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation over all C×H×W values: (x - mean) / max(std, 1/sqrt(CHW)).

    ``x``: uint8 or float in [0, 1], N×C×H×W. Uses the population std (ddof=0) and a floor of
    ``1/sqrt(C*H*W)`` (= 1/sqrt(3072) for CIFAR), the TensorFlow convention
    (tf.image.per_image_standardization). The floor is applied on the [0, 1] scale (uint8 is
    divided by 255 first) so uint8 and float inputs of the same image give the same result;
    it only changes near-flat images (std < ~4.6/255), and a constant image maps to zeros.
    """
    if x.ndim < 2:
        raise ValueError(f"expected a batch N×..., got shape {tuple(x.shape)}")
    x = _as_float01(x)
    dims = tuple(range(1, x.ndim))
    count = math.prod(x.shape[1:])
    mean = x.mean(dim=dims, keepdim=True)
    std = x.std(dim=dims, keepdim=True, correction=0)
    return (x - mean) / std.clamp_min(1.0 / math.sqrt(max(count, 1)))
