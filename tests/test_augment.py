"""Tests for mimicnet.augment: HSV jitter, scale jitter (crop + spline resize), mirror, standardisation."""
from __future__ import annotations

import colorsys
import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage

from mimicnet.data.augment import PARAM_KEYS, AugmentConfig, apply_params, augment, crop_range, hsv_to_rgb, identity_params, rgb_to_hsv, sample_params, spline_resize_matrix, standardize, to_uint8

ZERO = dict(dh=0.0, ds=0.0, dv=0.0, as_=0.0, av=0.0, scale_min=32, mirror=False)


def rand_u8(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def solid(rgb: tuple[float, float, float], n: int = 1) -> torch.Tensor:
    return torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1).expand(n, 3, 32, 32).clone()


def scipy_resize(crop: torch.Tensor, side: int = 32) -> torch.Tensor:
    """The paper's resize the plain way: scipy.ndimage.zoom(order=3) per channel of a C×S×S crop."""
    c = crop.double().numpy()
    return torch.from_numpy(np.stack([ndimage.zoom(ch, side / c.shape[-1], order=3) for ch in c]))


def circ(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance on the hue circle."""
    d = (a - b).abs() % 1.0
    return torch.minimum(d, 1.0 - d)


# ---------------------------------------------------------------------------- identity / basics


@pytest.mark.parametrize("hsv", [True, False])
def test_zero_ranges_are_identity(hsv: bool) -> None:
    x = rand_u8(16)
    cfg = AugmentConfig(**ZERO, hsv=hsv)
    y = augment(x, cfg, gen(1))
    # Trivial HSV params bypass the round trip and S=32 is an exact identity matrix: bit-exact.
    assert torch.equal(y, x.float() / 255)
    xf = torch.rand(4, 3, 32, 32, generator=gen(2))
    assert torch.equal(augment(xf, cfg, gen(3)), xf)


def test_hsv_stage_alone_is_near_identity() -> None:
    # A hue shift of exactly one turn goes through the full HSV path but must change nothing.
    x = torch.rand(8, 3, 32, 32, generator=gen(4))
    p = identity_params(8)
    p["hue"][:] = 1.0
    torch.testing.assert_close(apply_params(x, p), x, atol=2e-6, rtol=0)


def test_identity_resize_matrix() -> None:
    # scipy's zoom returns its input for a zoom of exactly 1, so S=32 must be exactly I.
    assert torch.equal(spline_resize_matrix(32), torch.eye(32, dtype=torch.float64))
    x = torch.rand(3, 32, 32, dtype=torch.float64, generator=gen(40))
    assert torch.equal(scipy_resize(x), x)


@pytest.mark.parametrize("size", [1, 2, 3, 8, 16, *range(24, 33)])
def test_resize_matrix_matches_scipy_zoom(size: int) -> None:
    """M_S X M_S^T is scipy.ndimage.zoom(X, 32/S, order=3), unclamped, for every crop size used."""
    x = torch.rand(3, size, size, dtype=torch.float64, generator=gen(size))
    m = spline_resize_matrix(size)
    assert m.shape == (32, size)
    err = (m @ x @ m.T - scipy_resize(x)).abs().max().item()
    # The contract is 1e-5; it is the same operator, so float64 agrees to rounding (~1e-15).
    assert err < 1e-12, f"S={size}: max |ours - scipy| = {err:.3g}"
    torch.testing.assert_close(m.sum(1), torch.ones(32, dtype=torch.float64))  # constants stay constant
    # Corner pixel centres are aligned (grid_mode=False): the first and last outputs are the
    # crop's first and last samples, since an interpolating spline passes through its samples.
    y = m @ x @ m.T
    torch.testing.assert_close(y[:, [0, 0, -1, -1], [0, -1, 0, -1]], x[:, [0, 0, -1, -1], [0, -1, 0, -1]], atol=1e-12, rtol=0)


def test_resize_matrix_float32_and_overshoot() -> None:
    m64, m32 = spline_resize_matrix(24), spline_resize_matrix(24, dtype=torch.float32)
    assert m32.dtype == torch.float32 and torch.equal(m32, m64.float())
    # A step edge rings: values leave [0, 1] before the clamp in apply_params (same in scipy).
    step = torch.zeros(1, 24, 24, dtype=torch.float64)
    step[..., 12:] = 1.0
    y = m64 @ step[0] @ m64.T
    assert y.min() < -1e-3 and y.max() > 1 + 1e-3
    torch.testing.assert_close(y, scipy_resize(step)[0], atol=1e-12, rtol=0)


@pytest.mark.parametrize("as_uint8", [True, False])
def test_output_contract(as_uint8: bool) -> None:
    x = rand_u8(32, seed=5)
    inp = x if as_uint8 else x.float() / 255
    before = inp.clone()
    y = augment(inp, AugmentConfig(), gen(6))
    assert y.dtype == torch.float32 and y.shape == x.shape and y.device == x.device
    assert y.min() >= 0 and y.max() <= 1
    assert torch.equal(inp, before)  # input untouched
    assert not torch.allclose(y, x.float() / 255, atol=1e-3)  # it did something


def test_augment_equals_apply_of_sampled_params() -> None:
    """The replay contract: params alone reproduce augment() bit for bit."""
    x = rand_u8(24, seed=7)
    for cfg in (AugmentConfig(), AugmentConfig(hsv=False), AugmentConfig(**ZERO)):
        y = augment(x, cfg, gen(8))
        p = sample_params(len(x), cfg, gen(8))
        assert torch.equal(y, apply_params(x, p))


def test_apply_is_batch_independent() -> None:
    # Replay may rebuild images in different batches than they were made in.
    x = rand_u8(40, seed=9)
    p = sample_params(40, AugmentConfig(), gen(10))
    full = apply_params(x, p)
    part = apply_params(x[13:29], {k: v[13:29] for k, v in p.items()})
    assert torch.equal(full[13:29], part)


def test_empty_batch_and_bad_input() -> None:
    x = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    assert augment(x, AugmentConfig(), gen(0)).shape == (0, 3, 32, 32)
    with pytest.raises(ValueError):
        apply_params(torch.zeros(2, 3, 28, 30), identity_params(2))  # not square
    with pytest.raises(KeyError):
        apply_params(torch.zeros(2, 3, 32, 32), {k: v for k, v in identity_params(2).items() if k != "flip"})
    with pytest.raises(ValueError):
        apply_params(torch.zeros(2, 3, 32, 32), identity_params(3))


# ---------------------------------------------------------------------------- colour


def test_rgb_hsv_round_trip() -> None:
    x = torch.rand(4, 3, 32, 32, generator=gen(11))
    # Add edge cases: black, white, greys, saturated primaries, ties between channels.
    x[0, :, 0, :8] = torch.tensor(
        [[0, 1, 0.5, 1, 0, 0, 1, 0.3], [0, 1, 0.5, 0, 1, 0, 1, 0.3], [0, 1, 0.5, 0, 0, 1, 0, 0.7]]
    )
    hsv = rgb_to_hsv(x)
    assert hsv.min() >= 0 and hsv.max() <= 1 and (hsv[:, 0] < 1).all()
    torch.testing.assert_close(hsv_to_rgb(hsv), x, atol=1e-6, rtol=0)


def test_rgb_to_hsv_matches_colorsys() -> None:
    px = torch.rand(400, 3, generator=gen(12))
    px[:20] = px[:20, :1]  # greys
    px[20:40, 1] = px[20:40, 0]  # r == g ties
    px[40:60, 2] = px[40:60, 0]  # r == b ties
    ours = rgb_to_hsv(px.T.reshape(1, 3, 20, 20)).reshape(3, -1).T.double()
    ref = torch.tensor([colorsys.rgb_to_hsv(*p) for p in px.double().tolist()], dtype=torch.float64)
    assert circ(ours[:, 0], ref[:, 0]).max() < 1e-5
    torch.testing.assert_close(ours[:, 1:], ref[:, 1:], atol=1e-6, rtol=0)
    # And the inverse against colorsys.hsv_to_rgb, for hues spanning all six sectors.
    hsv = torch.rand(400, 3, generator=gen(13))
    back = hsv_to_rgb(hsv.T.reshape(1, 3, 20, 20)).reshape(3, -1).T.double()
    ref = torch.tensor([colorsys.hsv_to_rgb(*p) for p in hsv.double().tolist()], dtype=torch.float64)
    torch.testing.assert_close(back, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "shift,expected",
    [(1 / 3, (0, 1, 0)), (2 / 3, (0, 0, 1)), (-1 / 3, (0, 0, 1)), (1.0, (1, 0, 0)), (-1.0, (1, 0, 0))],
)
def test_hue_shift_known_values(shift: float, expected: tuple[int, int, int]) -> None:
    p = identity_params(1)
    p["hue"][:] = shift
    y = apply_params(solid((1.0, 0.0, 0.0)), p)
    torch.testing.assert_close(y, solid(tuple(map(float, expected))), atol=1e-5, rtol=0)


def test_value_and_saturation_jitter_semantics() -> None:
    x = torch.rand(2, 3, 32, 32, generator=gen(14))
    # Scaling V scales all of R, G, B by the same factor.
    p = identity_params(2)
    p["val_scale"][:] = 0.5
    torch.testing.assert_close(apply_params(x, p), x * 0.5, atol=1e-6, rtol=0)
    # S -> 0 makes each pixel grey at its max channel.
    p = identity_params(2)
    p["sat_scale"][:] = 0.0
    torch.testing.assert_close(apply_params(x, p), x.amax(1, keepdim=True).expand_as(x), atol=1e-6, rtol=0)
    # A big positive V shift clips to V = 1 (never outside [0, 1]), and per-image params stay per image.
    p = identity_params(2)
    p["val_shift"][0] = 5.0
    y = apply_params(x, p)
    torch.testing.assert_close(y[0].amax(0), torch.ones(32, 32), atol=1e-6, rtol=0)
    torch.testing.assert_close(y[1], x[1], atol=0, rtol=0)


# ---------------------------------------------------------------------------- geometry


def test_hsv_happens_before_crop() -> None:
    """Paper order: HSV on the full image, then crop/resize, then mirror."""
    x = torch.rand(8, 3, 32, 32, generator=gen(30))
    p = sample_params(8, AugmentConfig(ds=0.6, dv=0.5), gen(31))  # wide ranges so clipping bites
    hsv_only = dict(identity_params(8), **{k: p[k] for k in ("hue", "sat_scale", "sat_shift", "val_scale", "val_shift")})
    geo_only = dict(identity_params(8), **{k: p[k] for k in ("size", "x0", "y0", "flip")})
    y = apply_params(x, p)
    torch.testing.assert_close(y, apply_params(apply_params(x, hsv_only), geo_only), atol=1e-6, rtol=0)
    reversed_order = apply_params(apply_params(x, geo_only), hsv_only)
    assert (y - reversed_order).abs().max() > 1e-3  # the order is observable, so the check above means something



def test_crop_of_horizontal_gradient() -> None:
    ramp = torch.linspace(0, 1, 32)
    x = ramp.view(1, 1, 1, 32).expand(1, 3, 32, 32).clone()
    p = identity_params(1)
    p["size"][:] = 16
    p["x0"][:] = 8
    p["y0"][:] = 5
    y = apply_params(x, p)
    row = y[0, 0, 0]
    assert (row.diff() >= -1e-6).all(), "resized ramp must stay monotone"
    assert (row.diff() > 0).sum() >= 28  # and actually increase, not go flat
    # Corner centres aligned (scipy's grid_mode=False): the endpoints are the crop's end values.
    assert abs(row[0].item() - ramp[8].item()) < 1e-6
    assert abs(row[-1].item() - ramp[23].item()) < 1e-6
    assert torch.equal(y, y[:, :, :1].expand_as(y))  # constant along y
    ref = scipy_resize(x[0, :, 5:21, 8:24]).clamp(0, 1).float()[None]
    torch.testing.assert_close(y, ref, atol=1e-6, rtol=0)


def test_batch_geometry_matches_per_image_scipy_zoom() -> None:
    """The batched path (bank gather + two bmm's, float32 out) is the per-image scipy pipeline."""
    n = 96
    x = torch.rand(n, 3, 32, 32, generator=gen(15))
    p = sample_params(n, AugmentConfig(hsv=False, scale_min=8), gen(16))
    assert len(set(p["size"].tolist())) >= 20  # most of 8..32 are exercised
    y = apply_params(x, p)
    for i in range(n):
        s, x0, y0 = int(p["size"][i]), int(p["x0"][i]), int(p["y0"][i])
        ref = scipy_resize(x[i, :, y0 : y0 + s, x0 : x0 + s]).clamp(0, 1).float()
        if p["flip"][i]:
            ref = ref.flip(-1)
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0, msg=f"image {i}: S={s} x0={x0} y0={y0}")


@pytest.mark.parametrize("side", [16, 48])
def test_other_image_sizes_crop_resize_and_mirror_like_scipy(side: int) -> None:
    """--image-size S: crops of S×S images (smallest: scale_min's fraction of 32, of S) resized back to S×S,
    the same per-image scipy pipeline; full-size crops without flips leave the images as they are."""
    cfg = AugmentConfig(hsv=False, scale_min=24)
    lo, hi = crop_range(cfg, side)
    assert (lo, hi) == (round(24 * side / 32), side) and crop_range(cfg) == (24, 32)
    n = 40
    x = torch.rand(n, 3, side, side, generator=gen(21))
    p = sample_params(n, cfg, gen(22), size=side)
    assert p["size"].min() >= lo and p["size"].max() <= side and (p["x0"] + p["size"] <= side).all()
    assert (p["y0"] + p["size"] <= side).all() and len(set(p["size"].tolist())) > 3
    y = apply_params(x, p)
    assert y.shape == x.shape and augment(x, cfg, gen(22)).shape == x.shape
    for i in range(n):
        s, x0, y0 = int(p["size"][i]), int(p["x0"][i]), int(p["y0"][i])
        ref = scipy_resize(x[i, :, y0 : y0 + s, x0 : x0 + s], side).clamp(0, 1).float()
        ref = ref.flip(-1) if p["flip"][i] else ref
        torch.testing.assert_close(y[i], ref, atol=1e-5, rtol=0, msg=f"image {i}: S={s} x0={x0} y0={y0}")
    assert torch.equal(apply_params(x, identity_params(n, size=side)), x)
    # at 32 the crops are drawn as before the size argument (transfer sets and runs made then stay the same)
    u = torch.rand((9, 8), generator=gen(3))
    assert torch.equal(sample_params(8, cfg, gen(3))["size"], (24 + (u[5] * 9).floor().long()).clamp_max(32))


def test_mirror_only() -> None:
    x = rand_u8(6, seed=17)
    p = identity_params(6)
    p["flip"][::2] = True
    y = apply_params(x, p)
    xf = x.float() / 255
    assert torch.equal(y[::2], xf[::2].flip(-1))  # permutation matrix in float64: exact
    assert torch.equal(y[1::2], xf[1::2])


def test_crop_offsets_move_content() -> None:
    # A single bright pixel: with S=24 at (x0, y0) it ends up at ~((px-x0)*31/23, (py-y0)*31/23),
    # output i sampling input i*(S-1)/31 (scipy's grid_mode=False).
    x = torch.zeros(1, 3, 32, 32)
    x[..., 20, 10] = 1.0
    p = identity_params(1)
    p["size"][:], p["x0"][:], p["y0"][:] = 24, 4, 8
    y = apply_params(x, p)[0, 0]
    r, c = divmod(int(y.argmax()), 32)
    assert abs(r - (20 - 8) * 31 / 23) <= 0.5 and abs(c - (10 - 4) * 31 / 23) <= 0.5


# ---------------------------------------------------------------------------- sampling


def test_seeds_and_param_statistics() -> None:
    x = rand_u8(8, seed=18)
    cfg = AugmentConfig()
    assert torch.equal(augment(x, cfg, gen(1)), augment(x, cfg, gen(1)))
    assert not torch.equal(augment(x, cfg, gen(1)), augment(x, cfg, gen(2)))

    n = 10_000
    p = sample_params(n, cfg, gen(19))
    assert set(p) == set(PARAM_KEYS)
    for k in ("hue", "sat_scale", "sat_shift", "val_scale", "val_shift"):
        assert p[k].dtype == torch.float32 and p[k].shape == (n,)
    for k in ("size", "x0", "y0"):
        assert p[k].dtype == torch.int64
    assert p["flip"].dtype == torch.bool

    size = p["size"]
    assert set(size.tolist()) == set(range(24, 33))
    counts = torch.bincount(size - 24, minlength=9).float()
    assert (counts - n / 9).abs().max() < 0.15 * n / 9  # roughly uniform
    for k in ("x0", "y0"):
        assert (p[k] >= 0).all() and (p[k] <= 32 - size).all()
        assert p[k][size == 24].max() == 8 and p[k][size == 24].min() == 0  # both ends reachable
        assert (p[k][size == 32] == 0).all()
    assert not torch.equal(p["x0"], p["y0"])
    assert abs(p["flip"].float().mean().item() - 0.5) < 0.03

    def check(t: torch.Tensor, lo: float, hi: float) -> None:
        eps = 1e-6
        assert t.min() >= lo - eps and t.max() <= hi + eps
        assert t.min() < lo + 0.01 * (hi - lo) and t.max() > hi - 0.01 * (hi - lo)  # range is used

    check(p["hue"], -0.06, 0.06)
    check(p["sat_shift"], -0.26, 0.26)
    check(p["val_shift"], -0.20, 0.20)
    check(p["sat_scale"], 1 / 1.21, 1.21)
    check(p["val_scale"], 1 / 1.13, 1.13)


def test_disabled_parts_sample_identity() -> None:
    p = sample_params(500, AugmentConfig(hsv=False, mirror=False, scale_min=32), gen(20))
    q = identity_params(500)
    for k in PARAM_KEYS:
        assert torch.equal(p[k], q[k]), k
    # Turning HSV off does not shift the geometric draws (fixed stream layout).
    a = sample_params(100, AugmentConfig(), gen(21))
    b = sample_params(100, AugmentConfig(hsv=False), gen(21))
    for k in ("size", "x0", "y0", "flip"):
        assert torch.equal(a[k], b[k])


def test_config_round_trip_and_validation() -> None:
    cfg = AugmentConfig(dh=0.1, scale_min=28, mirror=False)
    assert AugmentConfig(**json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert AugmentConfig(**json.loads(json.dumps(AugmentConfig().to_dict()))) == AugmentConfig()
    with pytest.raises(ValueError):
        AugmentConfig.from_dict({"dh": 0.1, "bogus": 1})
    for bad in (dict(dh=-0.1), dict(scale_min=33), dict(scale_min=0), dict(scale_min=24.0), dict(av=math.nan)):
        with pytest.raises(ValueError):
            AugmentConfig(**bad)


# ---------------------------------------------------------------------------- uint8 / standardise


def test_to_uint8_round_trip() -> None:
    x = rand_u8(4, seed=22)
    assert torch.equal(to_uint8(x.float() / 255), x)
    assert to_uint8(torch.tensor([-0.5, 0.0, 0.5 / 255, 1.0, 2.0])).tolist() == [0, 0, 0, 255, 255]


def test_standardize() -> None:
    x = rand_u8(16, seed=23)
    z = standardize(x)
    assert z.dtype == torch.float32 and z.shape == x.shape
    torch.testing.assert_close(z.mean((1, 2, 3)), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std((1, 2, 3), correction=0), torch.ones(16), atol=1e-4, rtol=0)
    torch.testing.assert_close(standardize(x.float() / 255), z, atol=1e-6, rtol=0)  # scale-consistent
    const = torch.full((2, 3, 32, 32), 77, dtype=torch.uint8)
    zc = standardize(const)
    assert torch.isfinite(zc).all() and torch.equal(zc, torch.zeros_like(zc))
    # Nearly flat image: the std floor 1/sqrt(3072) limits the gain instead of blowing up noise.
    flat = torch.full((1, 3, 32, 32), 0.5)
    flat[..., 0, 0] = 0.5 + 1 / 255
    assert standardize(flat).abs().max() <= (1 / 255) * math.sqrt(3072) + 1e-4


# ---------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cpu_and_cuda_agree() -> None:
    x = rand_u8(64, seed=24)
    cfg = AugmentConfig()
    p = sample_params(64, cfg, gen(25))
    cpu = apply_params(x, p)
    gpu = apply_params(x.cuda(), {k: v.cuda() for k, v in p.items()})
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=0)
    # Same seed, CPU generator: the same params land on either device, so augment agrees too.
    torch.testing.assert_close(augment(x.cuda(), cfg, gen(26)).cpu(), augment(x, cfg, gen(26)), atol=1e-5, rtol=0)
    # TF32 enabled globally (as training code often does) must not change the result.
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        gpu32 = apply_params(x.cuda(), {k: v.cuda() for k, v in p.items()})
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    torch.testing.assert_close(gpu32.cpu(), cpu, atol=1e-5, rtol=0)
    z = standardize(x.cuda())
    assert z.device.type == "cuda"
    torch.testing.assert_close(z.cpu(), standardize(x), atol=1e-5, rtol=0)
