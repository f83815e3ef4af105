"""VQGAN image tokenizer: pixels (uint8) <-> VQ codes <-> image token sequences.

The encoder, quantiser and the 1x1 ``quant_conv`` / ``post_quant_conv`` are transformers' ``ChameleonVQVAE``.
transformers has no decoder, so :class:`VQGANDecoder` adds the taming-transformers style decoder that Meta's
Chameleon VQGAN uses. Its module names mirror that decoder, so ``ChameleonVQGAN.load_state_dict`` takes Meta's
``vqgan.ckpt`` ``state_dict`` unchanged (``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``,
``quant_conv.*``, ``post_quant_conv.*``). The decoder reuses transformers' resnet / attention blocks (same keys).

Token layout of one image (released): ``[BOI, grid_h, grid_w] + rows of (w codes, row-end) + [EOI]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import ChameleonVQVAEConfig
from transformers.models.chameleon.modeling_chameleon import (
    ChameleonVQVAE,
    ChameleonVQVAEEncoderAttnBlock,
    ChameleonVQVAEEncoderResnetBlock,
)

from .token_layout import TokenLayout

# Lightning VQGAN checkpoints may carry the training losses (discriminator, LPIPS); they are not part of the model.
IGNORED_CKPT_PREFIXES = ("loss.",)


class _Upsample(nn.Module):
    """Nearest x2 then a 3x3 conv (taming ``Upsample(with_conv=True)``; key ``conv``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class VQGANDecoder(nn.Module):
    """Taming-style decoder: conv_in, mid (resnet, attn, resnet), ``up[i]`` levels (num_res_blocks + 1 resnets,
    optional attention, x2 upsample except at level 0), GroupNorm, swish, conv_out."""

    def __init__(self, config: ChameleonVQVAEConfig, out_channels: int = 3):
        super().__init__()
        mult = tuple(config.channel_multiplier)
        self.num_resolutions = len(mult)
        self.num_res_blocks = config.num_res_blocks
        block_in = config.base_channels * mult[-1]
        curr_res = config.resolution // 2 ** (self.num_resolutions - 1)
        attn_res = config.attn_resolutions or []
        use_attn = config.attn_type == "vanilla"

        self.conv_in = nn.Conv2d(config.latent_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = ChameleonVQVAEEncoderResnetBlock(config, block_in, block_in)
        self.mid.attn_1 = ChameleonVQVAEEncoderAttnBlock(block_in) if use_attn else nn.Identity()
        self.mid.block_2 = ChameleonVQVAEEncoderResnetBlock(config, block_in, block_in)

        ups: list[nn.Module] = []
        for i_level in reversed(range(self.num_resolutions)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = config.base_channels * mult[i_level]
            for _ in range(self.num_res_blocks + 1):
                block.append(ChameleonVQVAEEncoderResnetBlock(config, block_in, block_out))
                block_in = block_out
                if curr_res in attn_res and use_attn:
                    attn.append(ChameleonVQVAEEncoderAttnBlock(block_in))
            up = nn.Module()
            up.block = block
            up.attn = attn
            if i_level != 0:
                up.upsample = _Upsample(block_in)
                curr_res *= 2
            ups.insert(0, up)  # index by level, like the checkpoint keys
        self.up = nn.ModuleList(ups)
        self.norm_out = nn.GroupNorm(num_groups=32, num_channels=block_in, eps=1e-6, affine=True)
        self.conv_out = nn.Conv2d(block_in, out_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        for i_level in reversed(range(self.num_resolutions)):
            level = self.up[i_level]
            for i_block in range(self.num_res_blocks + 1):
                h = level.block[i_block](h)
                if len(level.attn) > 0:
                    h = level.attn[i_block](h)
            if i_level != 0:
                h = level.upsample(h)
        h = self.norm_out(h)
        h = h * torch.sigmoid(h)
        return self.conv_out(h)


class ChameleonVQGAN(ChameleonVQVAE):
    """transformers' ChameleonVQVAE (encoder + quantiser) plus the decoder it lacks."""

    def __init__(self, config: ChameleonVQVAEConfig):
        super().__init__(config)
        self.decoder = VQGANDecoder(config, out_channels=config.in_channels)
        self.eval()

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.config.channel_multiplier) - 1)

    def encode_to_codes(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [-1, 1] -> codes ``(B, H/d, W/d)``."""
        b, _, h, w = pixel_values.shape
        z = self.quant_conv(self.encoder(pixel_values))
        _, _, codes = self.quantize(z)
        return codes.view(b, h // self.downsample, w // self.downsample)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, h, w)`` -> ``(B, 3, h*d, w*d)`` in (roughly) [-1, 1]."""
        z = self.quantize.embedding(codes).permute(0, 3, 1, 2).contiguous()
        return self.decoder(self.post_quant_conv(z))

    def reconstruct(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Straight-through reconstruction for training: returns ``(x_rec, vq_loss)``."""
        z = self.quant_conv(self.encoder(pixel_values))
        zq, vq_loss, _ = self.quantize(z)
        return self.decoder(self.post_quant_conv(zq)), vq_loss


# ---- Meta vqgan.{yaml,ckpt} ---------------------------------------------------------------------------------
def vq_config_from_yaml(path: str | os.PathLike) -> ChameleonVQVAEConfig:
    """``vqgan.yaml`` (``model.params`` with ``embed_dim``, ``n_embed``, ``ddconfig``) -> ChameleonVQVAEConfig."""
    import yaml

    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    try:
        params = data["model"]["params"]
        dd = params["ddconfig"]
        cfg = ChameleonVQVAEConfig(
            embed_dim=int(params["embed_dim"]),
            num_embeddings=int(params["n_embed"]),
            double_latent=bool(dd.get("double_z", False)),
            latent_channels=int(dd["z_channels"]),
            resolution=int(dd["resolution"]),
            in_channels=int(dd["in_channels"]),
            base_channels=int(dd["ch"]),
            channel_multiplier=list(dd["ch_mult"]),
            num_res_blocks=int(dd["num_res_blocks"]),
            attn_resolutions=list(dd.get("attn_resolutions") or []),
            dropout=float(dd.get("dropout", 0.0)),
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a VQGAN yaml with model.params.{{embed_dim,n_embed,ddconfig}} ({e})") from e
    if int(dd.get("out_ch", cfg.in_channels)) != cfg.in_channels:
        raise ValueError(f"{path}: out_ch must equal in_channels")
    return cfg


#: Set to 1 to let :func:`read_vqgan_state_dict` unpickle arbitrary objects (legacy checkpoints of trusted origin).
TRUST_PICKLE_ENV = "WVLA_TRUST_PICKLE"


def _trust_pickle(trust_pickle: bool | None) -> bool:
    if trust_pickle is None:
        return os.environ.get(TRUST_PICKLE_ENV, "").strip().lower() in ("1", "true", "yes")
    if not isinstance(trust_pickle, bool):
        raise TypeError(f"trust_pickle must be a bool or None, got {type(trust_pickle).__name__}")
    return trust_pickle


def read_vqgan_state_dict(path: str | os.PathLike, *, trust_pickle: bool | None = None) -> dict[str, torch.Tensor]:
    """The model weights of a (Lightning) ``vqgan.ckpt``: its ``state_dict`` minus training-loss modules.

    Loaded with ``torch.load(..., weights_only=True)``: tensors, numbers, strings and plain containers only, so
    a checkpoint cannot run code. A legacy checkpoint that pickles other objects is refused unless the caller
    opts in with ``trust_pickle=True`` (or the environment variable ``WVLA_TRUST_PICKLE=1`` when
    ``trust_pickle`` is None); do that only for files of trusted origin, since unpickling can execute code.
    """
    trusted = _trust_pickle(trust_pickle)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trusted)
    except FileNotFoundError:
        raise
    except Exception as e:
        if trusted:
            raise ValueError(f"{path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from e
        raise ValueError(
            f"refusing to load {path}: it does not load with torch.load(weights_only=True) (it pickles objects "
            f"other than tensors and plain containers, or is not a torch checkpoint). Unpickling can run code; if "
            f"the file is of trusted origin, pass trust_pickle=True or set {TRUST_PICKLE_ENV}=1. "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        ) from e
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path}: expected a torch checkpoint with a 'state_dict' mapping")
    out = {k: v for k, v in sd.items() if not str(k).startswith(IGNORED_CKPT_PREFIXES)}
    bad = [k for k, v in out.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path}: state_dict entries are not tensors: {sorted(map(str, bad))[:8]}")
    check_finite_tensors(out, path)
    return out


def check_finite_tensors(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Raise ``ValueError`` naming the first floating-point tensor holding NaN or inf (black frames otherwise)."""
    for k, v in state_dict.items():
        if torch.is_floating_point(v) and not bool(torch.isfinite(v).all()):
            raise ValueError(f"{path}: tensor {k!r} holds NaN or inf values; the checkpoint is corrupt")


def load_meta_vqgan(
    ckpt_path: str | os.PathLike, yaml_path: str | os.PathLike, *, trust_pickle: bool | None = None
) -> ChameleonVQGAN:
    """Build the VQGAN from ``vqgan.yaml`` and load ``vqgan.ckpt`` strictly (any missing/unexpected key raises).

    ``trust_pickle``: see :func:`read_vqgan_state_dict` (default: refuse pickled objects)."""
    vq = ChameleonVQGAN(vq_config_from_yaml(yaml_path))
    sd = read_vqgan_state_dict(ckpt_path, trust_pickle=trust_pickle)
    missing, unexpected = vq.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{ckpt_path}: VQGAN keys do not match Meta's layout; missing={sorted(missing)[:8]} "
            f"(total {len(missing)}), unexpected={sorted(unexpected)[:8]} (total {len(unexpected)})"
        )
    return vq.eval()


# ---- pixels <-> codes <-> tokens ----------------------------------------------------------------------------
def pixels_to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> float32 ``(B, 3, H, W)`` in [-1, 1] (``x / 255 * 2 - 1``)."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device=device, dtype=torch.float32)
    return (x / 255.0 * 2.0 - 1.0).permute(0, 3, 1, 2).contiguous()


def tensor_to_pixels(x: torch.Tensor) -> np.ndarray:
    """``(B, 3, H, W)`` -> uint8 ``(B, H, W, 3)``: clamp to [-1, 1], ``(x + 1) / 2 * 255``, truncate (as upstream)."""
    x = ((x.detach().float().clamp(-1.0, 1.0) + 1.0) / 2.0 * 255.0).permute(0, 2, 3, 1)
    return x.cpu().numpy().astype(np.uint8)


class ImageTokenizer:
    """Pixels <-> codes <-> token ids for one VQGAN and one token layout. All methods take batches.

    ``batch_frames``: run the VQGAN on the whole batch in one call. Off by default: batched CPU convolutions
    round differently from single-frame ones in the last bit, and a vector env must give exactly what N single
    envs give; frame by frame, a frame's codes / pixels never depend on the other frames of the batch."""

    def __init__(self, vqgan: ChameleonVQGAN, layout: TokenLayout, *, batch_frames: bool = False):
        self.batch_frames = bool(batch_frames)
        if vqgan.config.num_embeddings != layout.n_image_codes:
            raise ValueError(
                f"VQGAN has {vqgan.config.num_embeddings} codes but the layout maps {layout.n_image_codes} image ids"
            )
        self.vqgan = vqgan
        self.layout = layout
        self._code2id = torch.as_tensor(layout.code_to_id_table())
        self._id2code = torch.as_tensor(layout.id_to_code_table())

    @property
    def downsample(self) -> int:
        return self.vqgan.downsample

    def latent_shape(self, height: int, width: int) -> tuple[int, int]:
        d = self.downsample
        if height % d or width % d:
            raise ValueError(f"image size {height}x{width} must be a multiple of the VQGAN downsampling factor {d}")
        return height // d, width // d

    def seq_len(self, height: int, width: int) -> int:
        return self.layout.image_seq_len(*self.latent_shape(height, width))

    @torch.inference_mode()
    def encode_codes(self, images: np.ndarray) -> torch.Tensor:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (B, H, W, 3), got {images.dtype} {images.shape}")
        self.latent_shape(images.shape[1], images.shape[2])
        dev = next(self.vqgan.parameters()).device
        if self.batch_frames:
            return self.vqgan.encode_to_codes(pixels_to_tensor(images, dev))
        # One frame per call: batched CPU convolutions differ in the last bit from unbatched ones, and a vector
        # env must give exactly what N single envs give.
        return torch.cat([self.vqgan.encode_to_codes(pixels_to_tensor(im[None], dev)) for im in images])

    @torch.inference_mode()
    def decode_codes(self, codes: torch.Tensor) -> np.ndarray:
        dev = next(self.vqgan.parameters()).device
        codes = torch.as_tensor(codes, device=dev)
        if self.batch_frames:
            return tensor_to_pixels(self.vqgan.decode_codes(codes))
        # Frame by frame for batch invariance, as in encode_codes.
        return np.concatenate([tensor_to_pixels(self.vqgan.decode_codes(c[None])) for c in codes])

    def codes_to_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``(B, h, w)`` -> ids ``(B, 3 + h (w + 1) + 1)`` in the released layout."""
        codes = torch.as_tensor(codes).long().cpu()
        b, h, w = codes.shape
        lay = self.layout
        ids = self._code2id[codes]  # (B, h, w)
        rows = torch.cat([ids, torch.full((b, h, 1), lay.row_end_id, dtype=torch.long)], dim=2).reshape(b, -1)
        head = torch.tensor([lay.boi_id, lay.grid_token(h), lay.grid_token(w)], dtype=torch.long).expand(b, 3)
        tail = torch.full((b, 1), lay.eoi_id, dtype=torch.long)
        return torch.cat([head, rows, tail], dim=1)

    def tokens_to_codes(self, tokens: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`codes_to_tokens`; validates the structure."""
        t = torch.as_tensor(tokens).long().cpu()
        if t.ndim == 1:
            t = t[None]
        lay = self.layout
        if not (bool((t[:, 0] == lay.boi_id).all()) and bool((t[:, -1] == lay.eoi_id).all())):
            raise ValueError("image tokens must start with BOI and end with EOI")
        h = lay.latent_size_from_grid_token(int(t[0, 1]))
        w = lay.latent_size_from_grid_token(int(t[0, 2]))
        if t.shape[1] != lay.image_seq_len(h, w) or (t[:, 1:3] != t[0, 1:3]).any():
            raise ValueError(f"image token sequence of length {t.shape[1]} does not match its grid {h}x{w}")
        body = t[:, 3:-1].reshape(t.shape[0], h, w + 1)
        if (body[:, :, w] != lay.row_end_id).any():
            raise ValueError("missing row-end token")
        codes = self._id2code[body[:, :, :w]]
        if (codes < 0).any():
            raise ValueError("non-image token where an image code was expected")
        return codes

    def encode(self, images: np.ndarray) -> torch.Tensor:
        """uint8 ``(B, H, W, 3)`` -> token ids ``(B, L_img)``."""
        return self.codes_to_tokens(self.encode_codes(images))

    def decode(self, tokens: torch.Tensor) -> np.ndarray:
        """Token ids ``(B, L_img)`` -> uint8 ``(B, H, W, 3)``."""
        return self.decode_codes(self.tokens_to_codes(tokens))


def vq_config_dict(config: ChameleonVQVAEConfig) -> dict[str, Any]:
    return config.to_dict()
