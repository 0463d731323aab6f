"""Data augmentation: each transformation on hand-made inputs, shapes, reproducibility."""

from __future__ import annotations

import warnings

import pytest
import torch

from descend.data import augment
from descend.errors import UserError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _images(n=8, c=2, h=6, w=5):
    return torch.arange(n * c * h * w, dtype=torch.float32).view(n, c, h, w) + 1  # no zeros: padding shows


EVERYTHING_IMAGE = dict(hflip=0.5, vflip=0.5, crop_padding=2, rotation=20, translate=0.1, noise_std=0.1)
EVERYTHING_SIGNAL = dict(hflip=0.5, shift=3, shift_mode="zeros", scale=0.2, noise_std=0.1)


def test_create_with_everything_off_returns_none():
    assert augment.create() is None
    assert augment.create(dataset="mnist1d") is None
    assert augment.create(hflip=False, vflip=0, rotation=0.0, shift=0, noise_std=None) is None
    assert augment.create(shift_mode="zeros") is None  # a mode alone turns nothing on


def test_create_validates_options():
    with pytest.raises(UserError, match="augment: unknown option 'flip'; valid options: hflip, vflip"):
        augment.create(flip=True)
    with pytest.raises(UserError, match=r"augment: option 'hflip' must be a number in \[0, 1\] or true or false; "
                       "got 1.5"):
        augment.create(hflip=1.5)
    with pytest.raises(UserError, match=r"augment: option 'crop_padding' must be an integer in \[0, 64\]; got 2.5"):
        augment.create(crop_padding=2.5)
    with pytest.raises(UserError, match=r"augment: option 'rotation' must be a number in \[0, 180\]; got -5"):
        augment.create(rotation=-5)
    with pytest.raises(UserError, match=r"augment: option 'scale' must be a number in \[0, 1\); got 1"):
        augment.create(scale=1)
    with pytest.raises(UserError, match="augment: option 'shift_mode' must be one of 'circular', 'zeros'; "
                       "got 'reflect'"):
        augment.create(shift=2, shift_mode="reflect")
    assert augment.create(hflip=True).hflip == 0.5


@pytest.mark.parametrize("dataset", ["mnist1d", "digits", "mnist", "MNIST", "kmnist"])
def test_flips_on_digit_data_warn_with_the_b_d_6_9_example(dataset):
    with pytest.warns(UserWarning, match=r"'b' and 'd' or '6' and '9'"):
        augment.create(dataset=dataset, hflip=True)
    with pytest.warns(UserWarning, match="'6' and '9'"):
        augment.create(dataset=dataset, vflip=0.3)


@pytest.mark.parametrize("dataset, options", [
    ("fashion_mnist", {"hflip": True}), ("fashion-mnist", {"vflip": True}), ("cifar_like", {"hflip": True}),
    ("mnist1d", {"shift": 4}), ("digits", {"crop_padding": 1}), (None, {"hflip": True}),
])
def test_no_flip_warning_otherwise(dataset, options):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert augment.create(dataset=dataset, **options) is not None


def test_flip_reverses_the_last_axis_or_the_height():
    x = _images()
    torch.testing.assert_close(augment.create(hflip=1.0)(x, _gen()), x.flip(-1), rtol=0, atol=0)
    torch.testing.assert_close(augment.create(vflip=1.0)(x, _gen()), x.flip(-2), rtol=0, atol=0)
    signal = torch.arange(12.0).view(3, 4)
    torch.testing.assert_close(augment.create(hflip=1.0)(signal, _gen()), signal.flip(-1), rtol=0, atol=0)


def test_flip_with_probability_flips_some_samples_whole():
    x = torch.randn(2000, 1, 3, 3, generator=_gen(1))
    out = augment.flip(x, -1, 0.3, _gen())
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    kept = (out == x).flatten(1).all(1)
    assert (flipped | kept).all()  # each sample is either untouched or flipped entirely
    # Binomial(2000, 0.3): σ = √(2000·0.3·0.7) ≈ 20.5; 600 ± 5σ
    assert abs(flipped.sum().item() - 600) < 103


def test_crop_with_padding_keeps_size_and_shifts_with_zero_fill():
    x = _images(n=2)
    top, left = torch.tensor([2, 0]), torch.tensor([2, 3])
    out = augment.crop(x, 2, top, left)
    assert out.shape == x.shape
    torch.testing.assert_close(out[0], x[0], rtol=0, atol=0)  # offset = padding: the original
    # offset (0, 3): rows move down by 2 (top 2 rows zero), columns left by 1 (last column zero)
    expected = torch.zeros_like(x[1])
    expected[:, 2:, :-1] = x[1, :, :-2, 1:]
    torch.testing.assert_close(out[1], expected, rtol=0, atol=0)


def test_random_crop_is_one_of_the_padded_windows():
    x = _images(n=16)
    out = augment.random_crop(x, 2, _gen())
    for i in range(16):
        windows = [augment.crop(x[i:i + 1], 2, torch.tensor([a]), torch.tensor([b]))[0]
                   for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert not torch.equal(out, x)


def test_affine_rotation_by_90_degrees_is_rot90():
    x = torch.randn(3, 2, 7, 7, generator=_gen())
    out = augment.affine(x, torch.full((3,), 90.0), torch.zeros(3, 2))
    # pixel centres map onto pixel centres; only cos(π/2) ≈ 6e-17 rounding enters the bilinear weights
    torch.testing.assert_close(out, torch.rot90(x, 1, dims=(-2, -1)), rtol=0, atol=1e-5)
    same = augment.affine(x, torch.zeros(3), torch.zeros(3, 2))
    torch.testing.assert_close(same, x, rtol=0, atol=1e-6)


def test_affine_translation_by_whole_pixels_shifts_with_zero_fill():
    x = _images(n=1, h=4, w=5)
    out = augment.affine(x, torch.zeros(1), torch.tensor([[2 / 5, -1 / 4]]))  # 2 px right, 1 px up
    expected = torch.zeros_like(x)
    expected[..., :-1, 2:] = x[..., 1:, :-2]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4)  # exact grid points, float32 rounding


def test_circular_shift_rolls_each_signal_and_zero_shift_fills_zeros():
    x = torch.arange(1.0, 25.0).view(3, 2, 4)
    s = torch.tensor([1, -2, 0])
    out = augment.shift_signal(x, s, "circular")
    for i in range(3):
        torch.testing.assert_close(out[i], torch.roll(x[i], int(s[i]), dims=-1), rtol=0, atol=0)
    zeros = augment.shift_signal(x, s, "zeros")
    torch.testing.assert_close(zeros[0], torch.tensor([[0.0, 1, 2, 3], [0, 5, 6, 7]]), rtol=0, atol=0)
    torch.testing.assert_close(zeros[1], torch.tensor([[11.0, 12, 0, 0], [15, 16, 0, 0]]), rtol=0, atol=0)
    torch.testing.assert_close(zeros[2], x[2], rtol=0, atol=0)
    flat = torch.arange(1.0, 6.0).view(1, 5)  # (N, L) signals too
    torch.testing.assert_close(augment.shift_signal(flat, torch.tensor([2]), "circular"),
                               torch.tensor([[4.0, 5, 1, 2, 3]]), rtol=0, atol=0)


def test_scale_multiplies_each_signal_by_one_factor_in_range():
    x = torch.rand(500, 2, 8, generator=_gen(1)) + 0.5
    out = augment.create(scale=0.2)(x, _gen())
    factor = out / x
    per_sample = factor[:, :1, :1]
    torch.testing.assert_close(factor, per_sample.expand_as(factor), rtol=1e-6, atol=0)
    assert per_sample.min() >= 0.8 - 1e-6 and per_sample.max() <= 1.2 + 1e-6
    assert per_sample.max() - per_sample.min() > 0.35  # spread over the range, not a constant


def test_gaussian_noise_has_the_requested_std():
    x = torch.zeros(100, 1, 50, 40)
    noise = augment.create(noise_std=0.3)(x, _gen())
    # 200 000 draws: standard errors 0.3/√n ≈ 7e-4 for the mean and ≈ 5e-4 for the std; 5σ bounds
    assert abs(noise.mean().item()) < 3.5e-3
    assert abs(noise.std().item() - 0.3) < 2.5e-3


@pytest.mark.parametrize("shape, options", [
    ((16, 3, 12, 10), EVERYTHING_IMAGE), ((16, 40), EVERYTHING_SIGNAL), ((16, 2, 40), EVERYTHING_SIGNAL),
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_reproducibility_and_input_untouched(shape, options, dtype):
    aug = augment.create(**options)
    x = torch.randn(shape, generator=_gen(5), dtype=dtype)
    view = x[2:10]  # a training batch that is a view of the stored data set
    stored = x.clone()
    out = aug(view, _gen(7))
    assert out.shape == view.shape and out.dtype == dtype and out.device == view.device
    assert torch.equal(x, stored)  # the data set itself (also its other splits) is never modified
    assert torch.equal(out, aug(view, _gen(7)))  # same seed, same augmentation
    assert not torch.equal(out, aug(view, _gen(8)))
    # the draws depend on the batch shape only: a generator advanced by one batch continues identically
    g1, g2 = _gen(3), _gen(3)
    aug(view, g1)
    aug(torch.zeros_like(view), g2)
    assert torch.equal(aug(view, g1), aug(view, g2))


def test_integer_images_can_be_flipped_and_cropped_but_not_rotated():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    out = augment.create(hflip=1.0, crop_padding=1)(x, _gen())
    assert out.dtype == torch.uint8 and out.shape == x.shape
    with pytest.raises(UserError, match="need a floating-point batch"):
        augment.create(rotation=10)(x, _gen())


def test_options_for_the_other_kind_of_input_are_errors():
    with pytest.raises(UserError, match=r"shift applies to 1-D signals only, got a batch of shape \(2, 1, 4"):
        augment.create(shift=2)(torch.zeros(2, 1, 4, 4), _gen())
    with pytest.raises(UserError, match="rotation applies to images only"):
        augment.create(rotation=10)(torch.zeros(2, 8), _gen())
    with pytest.raises(UserError, match="augmentation needs images"):
        augment.create(noise_std=1.0)(torch.zeros(8), _gen())


def test_labels_are_not_an_input():
    """The trainer passes the inputs only; the call cannot see (and so cannot change) the targets."""
    import inspect

    assert list(inspect.signature(augment.Augment.__call__).parameters) == ["self", "x", "generator"]
