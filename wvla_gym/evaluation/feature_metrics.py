"""Feature-network metrics of generated frames: LPIPS (VGG) and FVD (I3D), from local weight files only.


* **LPIPS** (VGG variant, Zhang et al. 2018), :class:`LPIPS`, needs two files:

  - ``--lpips-weights VGG16.pth``: torchvision VGG16 weights, either the full ``vgg16`` state_dict
    (``features.0.weight`` ... ``features.28.bias``, ``classifier.*`` ignored; torchvision's
    ``vgg16-397923af.pth``) or a ``vgg16().features`` state_dict (``0.weight`` ... ``28.bias``);
  - ``--lpips-linear vgg.pth``: the ``lpips`` package's linear-layer weights (``lpips/weights/v0.1/vgg.pth``:
    ``lin0.model.1.weight`` ... ``lin4.model.1.weight``, shapes ``(1, C, 1, 1)``, non-negative).

  Images in [-1, 1] -> LPIPS scaling layer (shift [-.030, -.088, -.188], scale [.458, .448, .450]) -> VGG16
  relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 -> unit-normalised over channels (eps 1e-10) -> squared
  difference -> non-negative 1x1 linear layer -> spatial mean -> sum over the 5 layers. Images need >= 16 px
  per side (4 max-pools; 64 x 64 leaves 4 x 4 at relu5_3).
* **FVD**, :class:`I3DFeatures` + :func:`fvd`, needs ``--fvd-weights i3d_torchscript.pt`` (the I3D TorchScript
  file StyleGAN-V uses), called as ``model(videos, rescale=False, resize=True, return_features=True)`` on
  float videos ``(N, 3, T, H, W)`` in [-1, 1] (only the keywords its ``forward`` declares are passed; none ->
  ``model(videos)``). FVD is the Fréchet distance (:func:`frechet_distance`) between Gaussian fits of the
  real and the imagined clip features. The reference protocol uses 16-frame clips; I3D's temporal pooling may
  reject very short clips.

Both are loaded with ``torch.load(..., weights_only=True)`` / ``torch.jit.load`` and report a ValueError naming
the argument and the expected form when a file is missing or its keys/shapes do not match.

The rollout is open-loop in the actions and closed-loop in the model: frame t+1 is imagined from the
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wvla_gym.evaluation.image_metrics import pair_images

if TYPE_CHECKING:
    import torch


def require_feature_weights(metric: str, weights: str | os.PathLike | None) -> Path:
    """LPIPS/FVD need pretrained feature networks, which this package never downloads."""
    what = {
        "lpips": "local LPIPS weights: torchvision VGG16 weights via --lpips-weights PATH plus the lpips "
        "package's linear-layer weights 'vgg.pth' via --lpips-linear PATH",
        "fvd": "a local I3D TorchScript file ('i3d_torchscript.pt', the network StyleGAN-V/RynnVLA use for FVD) "
        "via --fvd-weights PATH",
    }
    if metric not in what:
        raise ValueError(f"metric={metric!r}; expected 'lpips' or 'fvd'")
    if weights is None:
        raise ValueError(f"{metric.upper()} needs {what[metric]}; nothing is downloaded here")
    p = Path(weights)
    if not p.exists():
        raise ValueError(f"--{metric}-weights {str(p)!r} does not exist; expected {what[metric]}")
    return p


# --------------------------------------------------------------------------------------------------- LPIPS

#: torchvision ``vgg16().features`` as 5 blocks of conv widths; each conv is 3x3 (padding 1) + ReLU and each
#: block ends in a 2x2 max-pool, so conv/ReLU/pool modules are numbered 0..30 as in torchvision.
VGG16_BLOCKS: tuple[tuple[int, ...], ...] = ((64, 64), (128, 128), (256,) * 3, (512,) * 3, (512,) * 3)
#: ``features`` indices of relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 (the layers LPIPS compares).
LPIPS_VGG_TAPS: tuple[int, ...] = (3, 8, 15, 22, 29)
LPIPS_VGG_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
#: LPIPS's input scaling layer: ``(x - shift) / scale`` on images in [-1, 1].
LPIPS_SHIFT: tuple[float, float, float] = (-0.030, -0.088, -0.188)
LPIPS_SCALE: tuple[float, float, float] = (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10

_VGG_FORM = (
    "torchvision VGG16 weights: a full vgg16 state_dict (features.0.weight ... features.28.bias, classifier.* "
    "ignored; e.g. torchvision's vgg16-397923af.pth) or a vgg16().features state_dict (0.weight ... 28.bias)"
)
_LIN_FORM = (
    "the lpips package's VGG linear-layer weights (lpips/weights/v0.1/vgg.pth): lin0.model.1.weight ... "
    f"lin4.model.1.weight with shapes (1, C, 1, 1) for C in {list(LPIPS_VGG_CHANNELS)}, non-negative"
)


def vgg16_features() -> torch.nn.Sequential:
    """A randomly initialised VGG16 ``features`` stack whose ``state_dict`` keys match torchvision's numbering."""
    from torch import nn

    layers: list[nn.Module] = []
    c_in = 3
    for block in VGG16_BLOCKS:
        for c in block:
            layers += [nn.Conv2d(c_in, c, kernel_size=3, padding=1), nn.ReLU()]
            c_in = c
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def _load_tensor_dict(path: str | os.PathLike | None, arg: str, form: str) -> dict[str, torch.Tensor]:
    import torch

    if path is None:
        raise ValueError(f"{arg} is missing; expected {form}")
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"{arg} {str(p)!r} does not exist or is not a file; expected {form}")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors come in many types; all mean "not a plain state_dict"
        raise ValueError(
            f"{arg} {str(p)!r} is not a loadable state_dict ({type(e).__name__}: {e}); expected {form}"
        ) from e
    if not isinstance(sd, Mapping) or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()
    ):
        raise ValueError(
            f"{arg} {str(p)!r} holds a {type(sd).__name__}, not a name -> tensor dict; expected {form}"
        )
    return dict(sd)


def _index_order(key: str) -> tuple[int, str]:
    head, _, rest = key.partition(".")
    return (int(head), rest) if head.isdigit() else (10**9, key)


def load_vgg16_features(path: str | os.PathLike | None, arg: str = "--lpips-weights") -> torch.nn.Sequential:
    """VGG16 ``features`` (eval mode, frozen) from a full torchvision vgg16 or a features-only state_dict."""
    sd = _load_tensor_dict(path, arg, _VGG_FORM)
    if any(k.startswith("features.") for k in sd):
        sd = {k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")}
    net = vgg16_features()
    expected = net.state_dict()
    missing = sorted(set(expected) - set(sd), key=_index_order)
    unexpected = sorted(set(sd) - set(expected), key=_index_order)
    if missing or unexpected:
        raise ValueError(
            f"{arg} {str(path)!r}: keys do not match torchvision's vgg16 layout (missing {missing[:6]}"
            f"{' ...' if len(missing) > 6 else ''}, unexpected {unexpected[:6]}"
            f"{' ...' if len(unexpected) > 6 else ''}); expected {_VGG_FORM}"
        )
    for k, v in expected.items():
        if tuple(sd[k].shape) != tuple(v.shape):
            raise ValueError(
                f"{arg} {str(path)!r}: {k} has shape {tuple(sd[k].shape)}, expected {tuple(v.shape)}; "
                f"expected {_VGG_FORM}"
            )
    net.load_state_dict({k: v.float() for k, v in sd.items()})
    return net.eval().requires_grad_(False)


def load_lpips_linear(path: str | os.PathLike | None, arg: str = "--lpips-linear") -> list[torch.Tensor]:
    """The 5 LPIPS linear-layer weights ``(1, C, 1, 1)`` (other keys in the file are ignored)."""
    import torch

    sd = _load_tensor_dict(path, arg, _LIN_FORM)
    out = []
    for i, c in enumerate(LPIPS_VGG_CHANNELS):
        k = f"lin{i}.model.1.weight"
        if k not in sd:
            raise ValueError(
                f"{arg} {str(path)!r} has no {k!r} (keys: {sorted(sd)[:8]}); expected {_LIN_FORM}"
            )
        w = sd[k].float()
        if tuple(w.shape) != (1, c, 1, 1):
            raise ValueError(
                f"{arg} {str(path)!r}: {k} has shape {tuple(w.shape)}, expected {(1, c, 1, 1)}; "
                f"expected {_LIN_FORM}"
            )
        if not bool(torch.isfinite(w).all() and (w >= 0).all()):
            raise ValueError(
                f"{arg} {str(path)!r}: {k} has negative or non-finite entries; expected {_LIN_FORM}"
            )
        out.append(w)
    return out


def _images_to_tensor(images: np.ndarray, name: str, device: Any) -> torch.Tensor:
    import torch

    arr = np.asarray(images)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"{name} must be uint8 (N, H, W, 3); got {arr.dtype} {arr.shape}")
    t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32)).to(device)
    return (t / 127.5 - 1.0).permute(0, 3, 1, 2)


class LPIPS:
    """LPIPS (VGG variant) between uint8 ``(H, W, 3)`` images; lower = more similar, 0 for identical images.

    Build with :meth:`from_files` (torchvision VGG16 weights + the lpips package's ``vgg.pth``). ``lpips(a, b)``
    returns a float; :meth:`batch` takes ``(N, H, W, 3)`` stacks and returns ``(N,)`` distances.
    """

    def __init__(
        self,
        features: torch.nn.Sequential,
        linear: Sequence[torch.Tensor],
        device: Any = "cpu",
        batch_size: int = 16,
    ) -> None:
        import torch

        if len(linear) != len(LPIPS_VGG_TAPS):
            raise ValueError(
                f"linear has {len(linear)} weights; expected {len(LPIPS_VGG_TAPS)} (one per VGG layer)"
            )
        self.device = torch.device(device)
        self.features = features.to(self.device).eval().requires_grad_(False)
        self.linear = [w.to(self.device, torch.float32) for w in linear]
        self.shift = torch.tensor(LPIPS_SHIFT, device=self.device).view(1, 3, 1, 1)
        self.scale = torch.tensor(LPIPS_SCALE, device=self.device).view(1, 3, 1, 1)
        self.batch_size = int(batch_size)

    @classmethod
    def from_files(
        cls,
        vgg_weights: str | os.PathLike | None,
        linear_weights: str | os.PathLike | None,
        device: Any = "cpu",
        batch_size: int = 16,
    ) -> LPIPS:
        """``vgg_weights``: torchvision VGG16 weights (``--lpips-weights``); ``linear_weights``: ``vgg.pth``
        (``--lpips-linear``)."""
        return cls(load_vgg16_features(vgg_weights), load_lpips_linear(linear_weights), device, batch_size)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in LPIPS_VGG_TAPS:
                outs.append(x)
                if i == LPIPS_VGG_TAPS[-1]:
                    break
        return outs

    def distance_tensors(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``(N,)`` LPIPS of float ``(N, 3, H, W)`` tensors in [-1, 1]."""
        import torch

        n = x.shape[0]
        with torch.inference_mode():
            feats = self._taps((torch.cat([x, y]) - self.shift) / self.scale)
            total = torch.zeros(n, device=x.device)
            for f, w in zip(feats, self.linear, strict=True):
                f = f / (torch.sqrt(torch.sum(f * f, dim=1, keepdim=True)) + LPIPS_EPS)
                d = (f[:n] - f[n:]) ** 2
                total += (d * w).sum(dim=1).mean(dim=(1, 2))
        return total

    def batch(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``(N,)`` LPIPS distances of uint8 ``(N, H, W, 3)`` image stacks of equal shape."""
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            raise ValueError(f"image stacks must have equal shapes; got {x.shape} and {y.shape}")
        if x.ndim == 4 and min(x.shape[1:3]) < 16:
            raise ValueError(
                f"images of shape {x.shape[1:]} are too small for VGG16's 4 max-pools; expected >= 16 px"
            )
        out = []
        for i in range(0, len(x), self.batch_size):
            xt = _images_to_tensor(x[i : i + self.batch_size], "a", self.device)
            yt = _images_to_tensor(y[i : i + self.batch_size], "b", self.device)
            out.append(self.distance_tensors(xt, yt).cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros(0)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        x, y = pair_images(a, b)
        return float(self.batch(x[None], y[None])[0])


# ----------------------------------------------------------------------------------------------------- FVD


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    """Fréchet distance between Gaussian fits of two feature sets ``(N_a, D)`` and ``(N_b, D)``.

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b))`` with unbiased sample covariances and
    ``scipy.linalg.sqrtm`` (real part). If the product is singular enough to make ``sqrtm`` non-finite, 1e-6 is
    added to both diagonals. Tiny negative results from rounding are returned as 0.0. Symmetric in its arguments.
    """
    from scipy.linalg import sqrtm

    a, b = np.asarray(feats_a, dtype=np.float64), np.asarray(feats_b, dtype=np.float64)
    for name, f in (("feats_a", a), ("feats_b", b)):
        if f.ndim != 2 or len(f) < 2:
            raise ValueError(f"{name} must be (N, D) with N >= 2 samples; got shape {f.shape}")
        if not np.all(np.isfinite(f)):
            raise ValueError(f"{name} contains NaN or inf")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dims differ: {a.shape[1]} and {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))
    s_b = np.atleast_2d(np.cov(b, rowvar=False))
    covmean = sqrtm(s_a @ s_b)
    if not np.all(np.isfinite(covmean)):
        off = np.eye(len(s_a)) * 1e-6
        covmean = sqrtm((s_a + off) @ (s_b + off))
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(np.real(covmean)))
    return max(value, 0.0)


_I3D_FORM = "an I3D TorchScript file ('i3d_torchscript.pt', the network StyleGAN-V uses for FVD)"
#: StyleGAN-V's call: raw 400-d logits-layer features of videos already in [-1, 1], resized inside to 224.
I3D_KWARGS: dict[str, bool] = {"rescale": False, "resize": True, "return_features": True}


def _forward_kwargs(model: Any) -> dict[str, bool] | None:
    """The subset of :data:`I3D_KWARGS` that ``model.forward`` declares (None: cannot tell)."""
    fwd = getattr(model, "forward", model)
    schema = getattr(fwd, "schema", None)
    if schema is not None:  # TorchScript method
        names = {a.name for a in schema.arguments}
        return {k: v for k, v in I3D_KWARGS.items() if k in names}
    try:
        params = inspect.signature(fwd).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return dict(I3D_KWARGS)
    return {k: v for k, v in I3D_KWARGS.items() if k in params}


class I3DFeatures:
    """Video features for FVD from an I3D TorchScript module: uint8 clips ``(N, T, H, W, 3)`` -> ``(N, D)``."""

    def __init__(self, model: Any, device: Any = "cpu", batch_size: int = 16) -> None:
        import torch

        self.device = torch.device(device)
        if hasattr(model, "to"):
            model = model.to(self.device)
        self.model = model.eval() if hasattr(model, "eval") else model
        self.batch_size = int(batch_size)
        self.kwargs = _forward_kwargs(model)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike | None,
        device: Any = "cpu",
        batch_size: int = 16,
        arg: str = "--fvd-weights",
    ) -> I3DFeatures:
        import torch

        if path is None:
            raise ValueError(f"{arg} is missing; expected {_I3D_FORM}")
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"{arg} {str(p)!r} does not exist or is not a file; expected {_I3D_FORM}")
        try:
            model = torch.jit.load(str(p), map_location=device)
        except Exception as e:  # torch.jit.load raises RuntimeError/ValueError/zip errors for non-TorchScript
            raise ValueError(
                f"{arg} {str(p)!r} is not a TorchScript module ({type(e).__name__}: {e}); expected {_I3D_FORM}"
            ) from e
        return cls(model, device, batch_size)

    def _call(self, videos: torch.Tensor) -> torch.Tensor:
        if self.kwargs is None:
            try:
                return self.model(videos, **I3D_KWARGS)
            except TypeError:
                return self.model(videos)
        return self.model(videos, **self.kwargs) if self.kwargs else self.model(videos)

    def __call__(self, clips: np.ndarray) -> np.ndarray:
        import torch

        arr = np.asarray(clips)
        if arr.ndim != 5 or arr.shape[-1] != 3:
            raise ValueError(f"clips must be uint8 (N, T, H, W, 3); got {arr.dtype} {arr.shape}")
        out = []
        with torch.inference_mode():
            for i in range(0, len(arr), self.batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(arr[i : i + self.batch_size], dtype=np.float32))
                videos = (chunk.to(self.device) / 127.5 - 1.0).permute(0, 4, 1, 2, 3)  # (N, 3, T, H, W)
                feats = self._call(videos)
                if not torch.is_tensor(feats):
                    raise ValueError(
                        f"the I3D module returned {type(feats).__name__}; expected a (N, D) tensor"
                    )
                out.append(feats.reshape(len(videos), -1).float().cpu().numpy())
        return np.concatenate(out).astype(np.float64) if out else np.zeros((0, 0))


def fvd(
    real_clips: np.ndarray, generated_clips: np.ndarray, features: Callable[[np.ndarray], np.ndarray]
) -> float:
    """Fréchet Video Distance: :func:`frechet_distance` of ``features`` (e.g. :class:`I3DFeatures`) of uint8
    clips ``(N, T, H, W, 3)``; both sets need >= 2 clips (the reference protocol uses many 16-frame clips)."""
    return frechet_distance(features(np.asarray(real_clips)), features(np.asarray(generated_clips)))
