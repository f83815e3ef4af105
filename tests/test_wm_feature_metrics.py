"""LPIPS (VGG), FVD and the Fréchet distance with random local weights (nothing is downloaded)."""

from __future__ import annotations

import json
import math
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from wvla_gym.evaluation.world_model_metrics import (
    LPIPS,
    I3DFeatures,
    evaluate_open_loop,
    frechet_distance,
    fvd,
    load_lpips_linear,
    load_vgg16_features,
)

torch.set_num_threads(1)

# ------------------------------------------------------------------------------------------ Fréchet distance


def _diag_design(mu, var):
    """2D rows mu ± s_i e_i: sample mean mu, unbiased sample covariance diag(var) exactly."""
    mu, var = np.asarray(mu, float), np.asarray(var, float)
    d = len(mu)
    s = np.sqrt(
        var * (2 * d - 1) / 2
    )  # column i: two entries ±s_i, sum of squares 2 s_i^2, over N - 1 = 2d - 1
    rows = []
    for i in range(d):
        e = np.zeros(d)
        e[i] = s[i]
        rows += [mu + e, mu - e]
    return np.array(rows)


def test_frechet_identical_sets_is_zero():
    a = np.random.default_rng(0).normal(size=(40, 4))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_shifted_means_is_squared_shift():
    a = np.random.default_rng(1).normal(size=(40, 3))
    shift = np.array([1.0, -2.0, 0.5])
    assert frechet_distance(a, a + shift) == pytest.approx(1 + 4 + 0.25, rel=1e-7)


def test_frechet_diagonal_covariances_closed_form():
    mu1, v1 = [0.0, 1.0, 2.0], [1.0, 4.0, 9.0]
    mu2, v2 = [1.0, 1.0, 0.0], [4.0, 1.0, 0.25]
    a, b = _diag_design(mu1, v1), _diag_design(mu2, v2)
    np.testing.assert_allclose(np.cov(a, rowvar=False), np.diag(v1), atol=1e-12)  # the design is exact
    # |mu1 - mu2|^2 = 1 + 0 + 4; sum (sqrt v1 - sqrt v2)^2 = (1-2)^2 + (2-1)^2 + (3-0.5)^2 = 1 + 1 + 6.25
    assert frechet_distance(a, b) == pytest.approx(5 + 8.25, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(13.25, rel=1e-9)


def test_frechet_full_covariance_matches_eigen_formula_and_is_symmetric():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 3)) @ rng.normal(size=(3, 3))
    b = rng.normal(size=(25, 3)) @ rng.normal(size=(3, 3)) + 0.3
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    # Tr sqrtm(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) (similar matrices, the latter symmetric PSD).
    w, v = np.linalg.eigh(s1)
    r1 = v @ np.diag(np.sqrt(w)) @ v.T
    tr = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh(r1 @ s2 @ r1), 0, None)))
    expected = np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-8)


def test_frechet_input_errors():
    with pytest.raises(ValueError, match="N >= 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="feature dims differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))


# --------------------------------------------------------------------------------------------------- LPIPS

CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
BLOCKS = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]


@pytest.fixture(scope="module")
def lpips_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips")
    g = torch.Generator().manual_seed(0)
    sd, c_in = {}, 3
    for idx, c in zip(CONV_IDX, WIDTHS, strict=True):
        sd[f"features.{idx}.weight"] = torch.randn(c, c_in, 3, 3, generator=g) * math.sqrt(2 / (9 * c_in))
        sd[f"features.{idx}.bias"] = torch.randn(c, generator=g) * 0.05
        c_in = c
    sd["classifier.0.weight"] = torch.randn(4, 8, generator=g)  # ignored by the loader
    lin = {
        f"lin{i}.model.1.weight": torch.rand(1, c, 1, 1, generator=g)
        for i, c in enumerate([64, 128, 256, 512, 512])
    }
    torch.save(sd, d / "vgg16.pth")
    torch.save(lin, d / "vgg.pth")
    return d, sd, lin


def _ref_lpips(sd, lin, a, b):
    """LPIPS written out with functional ops on the raw tensors."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def taps(img):
        h = (
            torch.from_numpy(img).double().permute(2, 0, 1)[None] / 127.5 - 1 - shift.double()
        ) / scale.double()
        outs = []
        for k, block in enumerate(BLOCKS):
            if k:
                h = F.max_pool2d(h, kernel_size=2, stride=2)
            for idx in block:
                h = F.relu(
                    F.conv2d(
                        h,
                        sd[f"features.{idx}.weight"].double(),
                        sd[f"features.{idx}.bias"].double(),
                        padding=1,
                    )
                )
            outs.append(h)
        return outs

    total = 0.0
    for i, (fa, fb) in enumerate(zip(taps(a), taps(b), strict=True)):
        na = fa / (torch.sqrt((fa**2).sum(dim=1, keepdim=True)) + 1e-10)
        nb = fb / (torch.sqrt((fb**2).sum(dim=1, keepdim=True)) + 1e-10)
        total += float(F.conv2d((na - nb) ** 2, lin[f"lin{i}.model.1.weight"].double()).mean())
    return total


def _images(seed, size=32):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size, 3)).astype(np.uint8)


def test_lpips_zero_positive_symmetric_and_matches_reference(lpips_files):
    d, sd, lin = lpips_files
    m = LPIPS.from_files(d / "vgg16.pth", d / "vgg.pth")
    x, y = _images(0), _images(1)
    assert m(x, x) == pytest.approx(0.0, abs=1e-7)
    dxy = m(x, y)
    assert dxy > 0
    assert m(y, x) == pytest.approx(dxy, rel=1e-5)
    assert dxy == pytest.approx(_ref_lpips(sd, lin, x, y), rel=1e-4)
    # batch == per pair; 64 x 64 images (4 x 4 at relu5_3) work too
    big = np.stack([_images(2, 64), _images(3, 64)])
    got = m.batch(big, big[::-1])
    assert got.shape == (2,) and np.all(got > 0) and got[0] == pytest.approx(got[1], rel=1e-5)


def test_lpips_accepts_features_only_state_dict(lpips_files, tmp_path):
    d, sd, _ = lpips_files
    feats_only = {k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")}
    assert "0.weight" in feats_only and "28.bias" in feats_only
    torch.save(feats_only, tmp_path / "features.pth")
    net = load_vgg16_features(tmp_path / "features.pth")
    assert torch.equal(net[28].bias, sd["features.28.bias"])
    x, y = _images(4), _images(5)
    a = LPIPS.from_files(tmp_path / "features.pth", d / "vgg.pth")(x, y)
    b = LPIPS.from_files(d / "vgg16.pth", d / "vgg.pth")(x, y)
    assert a == pytest.approx(b, rel=1e-6)


def test_lpips_clear_errors(lpips_files, tmp_path):
    d, sd, lin = lpips_files
    with pytest.raises(ValueError, match="--lpips-weights .* does not exist"):
        LPIPS.from_files(tmp_path / "nope.pth", d / "vgg.pth")
    with pytest.raises(ValueError, match="--lpips-linear .* does not exist"):
        LPIPS.from_files(d / "vgg16.pth", tmp_path / "nope.pth")
    torch.save(
        {"features.0.weight": sd["features.0.weight"], "features.1.weight": torch.zeros(3)},
        tmp_path / "bad_keys.pth",
    )
    with pytest.raises(ValueError, match="keys do not match torchvision's vgg16 layout"):
        load_vgg16_features(tmp_path / "bad_keys.pth")
    bad_shape = dict(sd)
    bad_shape["features.28.bias"] = torch.zeros(7)
    torch.save(bad_shape, tmp_path / "bad_shape.pth")
    with pytest.raises(ValueError, match=r"28\.bias has shape \(7,\), expected \(512,\)"):
        load_vgg16_features(tmp_path / "bad_shape.pth")
    torch.save({k: v for k, v in lin.items() if not k.startswith("lin4")}, tmp_path / "lin_missing.pth")
    with pytest.raises(ValueError, match="--lpips-linear .*lin4.model.1.weight"):
        load_lpips_linear(tmp_path / "lin_missing.pth")
    neg = dict(lin)
    neg["lin0.model.1.weight"] = -lin["lin0.model.1.weight"]
    torch.save(neg, tmp_path / "lin_neg.pth")
    with pytest.raises(ValueError, match="negative"):
        load_lpips_linear(tmp_path / "lin_neg.pth")
    with pytest.raises(ValueError, match="too small"):
        LPIPS.from_files(d / "vgg16.pth", d / "vgg.pth")(_images(0, 8), _images(1, 8))
    (tmp_path / "garbage.pth").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a loadable state_dict"):
        load_lpips_linear(tmp_path / "garbage.pth")


# ----------------------------------------------------------------------------------------------------- FVD

W8 = torch.tensor(np.random.default_rng(7).normal(size=(8, 8)), dtype=torch.float32)


class _TinyI3D(torch.nn.Module):
    """Stands in for i3d_torchscript.pt: 8 hand-checkable features; insists on StyleGAN-V's keywords."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x, rescale: bool = True, resize: bool = False, return_features: bool = False):
        if rescale or not resize or not return_features:
            raise RuntimeError("expected rescale=False, resize=True, return_features=True")
        m = x.mean(dim=(2, 3, 4))
        q = (x * x).mean(dim=(2, 3, 4))
        first = x[:, 0, 0].mean(dim=(1, 2)).unsqueeze(1)
        last = x[:, 1, -1].mean(dim=(1, 2)).unsqueeze(1)
        return torch.cat([m, q, first, last], dim=1) @ self.w.t()


class _PlainI3D(torch.nn.Module):
    """Same features, but a forward(videos) without keywords."""

    def __init__(self, w: torch.Tensor):
        super().__init__()
        self.register_buffer("w", w)

    def forward(self, x):
        m = x.mean(dim=(2, 3, 4))
        q = (x * x).mean(dim=(2, 3, 4))
        first = x[:, 0, 0].mean(dim=(1, 2)).unsqueeze(1)
        last = x[:, 1, -1].mean(dim=(1, 2)).unsqueeze(1)
        return torch.cat([m, q, first, last], dim=1) @ self.w.t()


def _ref_features(clips):
    """The same 8 features by hand in numpy from uint8 clips (N, T, H, W, 3)."""
    v = clips.astype(np.float64) / 127.5 - 1
    m = v.mean(axis=(1, 2, 3))
    q = (v * v).mean(axis=(1, 2, 3))
    first = v[:, 0, :, :, 0].mean(axis=(1, 2))[:, None]
    last = v[:, -1, :, :, 1].mean(axis=(1, 2))[:, None]
    return np.concatenate([m, q, first, last], axis=1) @ W8.double().numpy().T


@pytest.fixture(scope="module")
def i3d_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("i3d")
    torch.jit.save(torch.jit.script(_TinyI3D(W8)), str(d / "i3d_torchscript.pt"))
    torch.jit.save(torch.jit.script(_PlainI3D(W8)), str(d / "plain.pt"))
    return d


def test_fvd_matches_frechet_of_hand_features(i3d_files):
    rng = np.random.default_rng(3)
    real = rng.integers(0, 256, (20, 4, 8, 8, 3)).astype(np.uint8)
    gen = rng.integers(60, 256, (20, 4, 8, 8, 3)).astype(np.uint8)  # brighter: a clearly different set
    feats = I3DFeatures.from_file(i3d_files / "i3d_torchscript.pt", batch_size=7)
    np.testing.assert_allclose(feats(real), _ref_features(real), rtol=1e-4, atol=1e-5)
    assert fvd(real, real, feats) == pytest.approx(0.0, abs=1e-7)
    expected = frechet_distance(_ref_features(real), _ref_features(gen))
    assert expected > 0.01
    assert fvd(real, gen, feats) == pytest.approx(expected, rel=1e-3)
    plain = I3DFeatures.from_file(i3d_files / "plain.pt")  # no keywords -> model(videos)
    assert fvd(real, gen, plain) == pytest.approx(expected, rel=1e-3)


def test_fvd_weight_errors(tmp_path):
    with pytest.raises(ValueError, match="--fvd-weights .* does not exist.*I3D TorchScript"):
        I3DFeatures.from_file(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not torchscript")
    with pytest.raises(ValueError, match="not a TorchScript module"):
        I3DFeatures.from_file(tmp_path / "bad.pt")


# ------------------------------------------------------------------------------- open loop + wm-eval CLI


def _episode(n_frames=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n_frames, size, size, 3)).astype(np.uint8), np.zeros(
        (n_frames - 1, 7), np.float32
    )


def _brighten(f, a):
    return np.clip(f.astype(int) + 12, 0, 255).astype(np.uint8)


def test_open_loop_with_lpips_and_fvd(lpips_files, i3d_files):
    d, _, _ = lpips_files
    lp = LPIPS.from_files(d / "vgg16.pth", d / "vgg.pth")
    feats = I3DFeatures.from_file(i3d_files / "i3d_torchscript.pt")
    frames, actions = _episode(n_frames=16)
    base = evaluate_open_loop([(frames, actions)], _brighten, horizon=2, every=1)
    res = evaluate_open_loop([(frames, actions)], _brighten, horizon=2, every=1, lpips=lp, fvd_features=feats)
    assert "lpips" not in base and "fvd" not in base
    assert {k: res[k] for k in base} == base  # PSNR/SSIM unchanged
    # start states 0..14; horizon 1: 15 pairs, horizon 2: 14 (the last start has one action left)
    assert res["n"] == [15, 14]
    one_step = [_brighten(frames[s], None) for s in range(15)]
    two_step = [_brighten(one_step[s], None) for s in range(14)]
    want1 = np.mean([lp(one_step[s], frames[s + 1]) for s in range(15)])
    want2 = np.mean([lp(two_step[s], frames[s + 2]) for s in range(14)])
    assert res["lpips"] == pytest.approx([want1, want2], rel=1e-5)
    real_clips = np.stack([frames[s + 1 : s + 3] for s in range(14)])
    fake_clips = np.stack([np.stack([one_step[s], two_step[s]]) for s in range(14)])
    assert res["fvd_clips"] == 14
    want_fvd = frechet_distance(_ref_features(real_clips), _ref_features(fake_clips))
    assert res["fvd"] == pytest.approx(want_fvd, rel=1e-3)
    one = evaluate_open_loop([(frames[:3], actions[:2])], _brighten, horizon=2, every=2, fvd_features=feats)
    assert one["fvd_clips"] == 1 and one["fvd"] is None


def test_wm_eval_cli_with_lpips_and_fvd(lpips_files, i3d_files, tmp_path, monkeypatch, capsys):
    h5py = pytest.importorskip("h5py")
    from wvla_gym.cli.wm_eval import main

    d, _, _ = lpips_files
    frames, _ = _episode(n_frames=12)
    with h5py.File(tmp_path / "demo.hdf5", "w") as f:
        f.create_group("data").attrs["images_rotated_180"] = True  # our layout: frames stored upright
        g = f.create_group("data/demo_0")
        g.create_dataset("obs/agentview_rgb", data=frames)
        g.create_dataset("actions", data=np.zeros((12, 7), np.float32))

    class _Runtime:  # stands in for WorldVLARuntime: no model is loaded
        resolution = 16
        world_history = 1

        @classmethod
        def from_pretrained(cls, checkpoint, device="cpu"):
            return cls()

        def imagine(self, f, a):
            return _brighten(f, a)

    monkeypatch.setitem(sys.modules, "wvla_gym.runtime", types.SimpleNamespace(WorldVLARuntime=_Runtime))
    out = tmp_path / "wm.json"
    common = ["--data", str(tmp_path / "demo.hdf5"), "--horizon", "2", "--every", "1", "--out", str(out),
              "--imagine-from", "frames"]  # the stand-in runtime has no VQ: imagine from frames
    rc = main(
        common
        + [
            "--lpips-weights",
            str(d / "vgg16.pth"),
            "--lpips-linear",
            str(d / "vgg.pth"),
            "--fvd-weights",
            str(i3d_files / "i3d_torchscript.pt"),
        ]
    )
    assert rc == 0
    rep = json.loads(out.read_text())
    assert rep["n"] == [11, 10] and len(rep["lpips"]) == 2 and all(v > 0 for v in rep["lpips"])
    assert rep["fvd_clips"] == 10 and rep["fvd"] is not None and rep["fvd"] > 0
    printed = capsys.readouterr().out
    assert "LPIPS" in printed and "FVD (10 clips" in printed
    # Without weights: the old report (no lpips/fvd keys)
    assert main(common) == 0
    assert "lpips" not in json.loads(out.read_text()) and "fvd" not in json.loads(out.read_text())
    # The copy-the-start-frame baseline, by hand: mean PSNR of (frame s, frame s + h) over the start states
    base = json.loads(out.read_text())["baseline_copy_start_frame"]

    def _psnr(a, b):
        mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
        return 10 * np.log10(255.0**2 / mse)

    want = [np.mean([_psnr(frames[s], frames[s + h]) for s in range(12 - h)]) for h in (1, 2)]
    assert base["n"] == [11, 10] and base["psnr"] == pytest.approx(want, rel=1e-6)
    assert main(common + ["--no-baseline"]) == 0
    assert "baseline_copy_start_frame" not in json.loads(out.read_text())
    # Missing pieces are clear errors (exit 2) before any model is built
    capsys.readouterr()
    assert main(common + ["--lpips-weights", str(d / "vgg16.pth")]) == 2
    assert "--lpips-linear" in "".join(capsys.readouterr())  # stdout or stderr
    assert main(common + ["--fvd"]) == 2
    assert "I3D TorchScript" in "".join(capsys.readouterr())
