"""The one resize and the one PSNR (wvla_gym.utils.images), against hand-computed values."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from wvla_gym.utils.images import PSNR_IDENTICAL_DB, psnr, psnr_per_image, resize_uint8


def test_area_resize_averages_blocks_by_hand():
    # 4x4 -> 2x2: every output pixel is the mean of its 2x2 block (channel 0 shown; channels 1, 2 = 0, 255).
    ch = np.array([[0, 2, 10, 10], [4, 6, 10, 10], [100, 101, 7, 8], [102, 103, 9, 10]], np.uint8)
    img = np.stack([ch, np.zeros_like(ch), np.full_like(ch, 255)], -1)
    out = resize_uint8(img[None], 2)
    assert out.dtype == np.uint8 and out.shape == (1, 2, 2, 3)
    assert out[0, :, :, 0].tolist() == [[3, 10], [102, 8]]  # 12/4, 40/4, 406/4=101.5 -> 102 (half to even), 34/4=8.5 -> 8
    assert (out[0, :, :, 1] == 0).all() and (out[0, :, :, 2] == 255).all()
    # a single (H, W, 3) frame works the same
    np.testing.assert_array_equal(resize_uint8(img, 2), out[0])


def test_area_resize_non_integer_factor_by_hand():
    # 3 -> 2 (adaptive average pooling): output i covers input [floor(i*3/2), ceil((i+1)*3/2)) = [0,2), [1,3)
    ch = np.array([[0, 30, 60]] * 3, np.uint8)
    img = np.repeat(ch[..., None], 3, axis=-1)
    out = resize_uint8(img, 2)
    assert out[0, :, 0].tolist() == [15, 45]  # (0+30)/2, (30+60)/2


def test_resize_is_identity_at_the_same_size_and_checks_input():
    x = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    assert resize_uint8(x, 8) is x
    with pytest.raises(ValueError, match="uint8"):
        resize_uint8(x.astype(np.float32), 4)
    with pytest.raises(ValueError, match="size"):
        resize_uint8(x, 0)


def test_psnr_hand_values_and_cap():
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))  # MSE = 100 -> 28.1308 dB
    assert psnr(a, b) == pytest.approx(28.1308036, abs=1e-6)
    assert PSNR_IDENTICAL_DB == 100.0
    assert psnr(a, a) == 100.0  # identical images: the documented finite value
    # one pixel off by 1 in 1000x1000x3: MSE = 1/3e6 -> 112.9 dB uncapped -> capped at 100
    big = np.zeros((1000, 1000, 3), np.uint8)
    big2 = big.copy()
    big2[0, 0, 0] = 1
    assert 10 * math.log10(255**2 * 3e6) > 100 and psnr(big, big2) == 100.0
    # data_range: MSE = 0.01 with range 1 -> 20 dB
    assert psnr(np.zeros(4), np.full(4, 0.1), data_range=1.0) == pytest.approx(20.0)
    with pytest.raises(ValueError, match="equal shape"):
        psnr(a, b[:4])


def test_psnr_per_image_matches_psnr_of_each_image():
    a = np.zeros((3, 4, 4, 3), np.uint8)
    b = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (0, 10, 255)])
    got = psnr_per_image(a, b)
    assert got.shape == (3,)
    np.testing.assert_allclose(got, [100.0, 10 * math.log10(255**2 / 100), 0.0])
    assert psnr_per_image(a[:0], b[:0]).shape == (0,)


def test_images_module_imports_no_torch():
    code = "import sys, wvla_gym.utils.images, wvla_gym.evaluation.world_model_metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
