"""VQGAN image tokenizer: Meta key layout, token layout, and a trained-vs-untrained reconstruction check."""

import numpy as np
import pytest
import torch
import yaml

from wvla_gym.model.image_tokenizer import (
    ChameleonVQGAN,
    ImageTokenizer,
    load_meta_vqgan,
    pixels_to_tensor,
    tensor_to_pixels,
    vq_config_from_yaml,
)
from wvla_gym.model.token_layout import TokenLayout

from .model_fixtures import vqgan_yaml


def taming_keys(dd: dict) -> set[str]:
    """Parameter names of taming-transformers' VQModel (Encoder, Decoder, VectorQuantizer2, 1x1 convs), written
    out from its construction rules independently of our module tree."""
    ch, mult, nrb = dd["ch"], dd["ch_mult"], dd["num_res_blocks"]
    keys = set()

    def conv(p):
        keys.update({p + ".weight", p + ".bias"})

    def res(p, cin, cout):
        for n in ("norm1", "conv1", "norm2", "conv2"):
            conv(f"{p}.{n}")
        if cin != cout:
            conv(f"{p}.nin_shortcut")

    def attn(p):
        for n in ("norm", "q", "k", "v", "proj_out"):
            conv(f"{p}.{n}")

    conv("encoder.conv_in")
    cin_mult = (1, *mult)
    for i, m in enumerate(mult):
        bi = ch * cin_mult[i]
        for b in range(nrb):
            res(f"encoder.down.{i}.block.{b}", bi, ch * m)
            bi = ch * m
        if i != len(mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv")
    top = ch * mult[-1]
    for side in ("encoder", "decoder"):
        res(f"{side}.mid.block_1", top, top)
        attn(f"{side}.mid.attn_1")
        res(f"{side}.mid.block_2", top, top)
        conv(f"{side}.norm_out")
        conv(f"{side}.conv_out")
    conv("decoder.conv_in")
    bi = top
    for i in reversed(range(len(mult))):
        for b in range(nrb + 1):
            res(f"decoder.up.{i}.block.{b}", bi, ch * mult[i])
            bi = ch * mult[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv")
    conv("quant_conv")
    conv("post_quant_conv")
    keys.add("quantize.embedding.weight")
    return keys


def test_meta_key_layout(tmp_path):
    y = vqgan_yaml(n_embed=32)
    dd = y["model"]["params"]["ddconfig"] = {**y["model"]["params"]["ddconfig"], "ch_mult": [1, 1, 2], "num_res_blocks": 2}
    (tmp_path / "vqgan.yaml").write_text(yaml.safe_dump(y))
    vq = ChameleonVQGAN(vq_config_from_yaml(tmp_path / "vqgan.yaml"))
    assert set(vq.state_dict()) == taming_keys(dd)
    # a Meta-layout checkpoint loads strictly, training-loss modules are dropped
    sd = {k: torch.randn_like(v) for k, v in vq.state_dict().items()}
    torch.save({"state_dict": {**sd, "loss.perceptual_loss.net.weight": torch.zeros(1)}}, tmp_path / "vqgan.ckpt")
    loaded = load_meta_vqgan(tmp_path / "vqgan.ckpt", tmp_path / "vqgan.yaml")
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in sd.items())
    # a key that Meta's layout does not have is an error, as is a missing one
    torch.save({"state_dict": {**sd, "decoder.extra.weight": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="unexpected"):
        load_meta_vqgan(tmp_path / "bad.ckpt", tmp_path / "vqgan.yaml")
    sd.pop("decoder.conv_out.bias")
    torch.save({"state_dict": sd}, tmp_path / "missing.ckpt")
    with pytest.raises(ValueError, match="decoder.conv_out.bias"):
        load_meta_vqgan(tmp_path / "missing.ckpt", tmp_path / "vqgan.yaml")
    (tmp_path / "broken.yaml").write_text("model: {params: {}}")
    with pytest.raises(ValueError, match="ddconfig"):
        vq_config_from_yaml(tmp_path / "broken.yaml")


def test_released_defaults_match_chameleon_vqgan():
    cfg = vq_config_from_yaml.__globals__["ChameleonVQVAEConfig"]()
    # the released yaml values equal transformers' defaults: 8192 codes, 256-d, ch 128, ch_mult 1,1,2,2,4
    assert (cfg.num_embeddings, cfg.embed_dim, cfg.base_channels) == (8192, 256, 128)
    assert list(cfg.channel_multiplier) == [1, 1, 2, 2, 4]


def _tokenizer(n_codes=16, res=16, mult=(1, 2)):
    y = vqgan_yaml(resolution=res, n_embed=n_codes)
    y["model"]["params"]["ddconfig"]["ch_mult"] = list(mult)
    cfg = vq_config_from_yaml.__globals__["ChameleonVQVAEConfig"](
        embed_dim=4, num_embeddings=n_codes, latent_channels=4, resolution=res, base_channels=32,
        channel_multiplier=list(mult), num_res_blocks=1)
    torch.manual_seed(0)
    return ImageTokenizer(ChameleonVQGAN(cfg), TokenLayout.compact(n_codes))


def test_token_layout_by_hand():
    tok = _tokenizer()
    lay = tok.layout
    codes = torch.tensor([[[0, 1], [2, 3]]])
    ids = tok.codes_to_tokens(codes)[0].tolist()
    i = lay.image_ids
    assert ids == [lay.boi_id, lay.grid_base_id + 2, lay.grid_base_id + 2,
                   i[0], i[1], lay.row_end_id, i[2], i[3], lay.row_end_id, lay.eoi_id]
    assert torch.equal(tok.tokens_to_codes(torch.tensor([ids])), codes)
    with pytest.raises(ValueError, match="row-end"):
        bad = list(ids)
        bad[5] = i[0]
        tok.tokens_to_codes(torch.tensor([bad]))
    # released permutation: code c -> image_ids[c], not an offset
    rel = TokenLayout.worldvla(4 + np.random.default_rng(0).permutation(8192))
    rel_ids = rel.code_to_id_table()[[0, 1]]
    assert rel.id_to_code_table()[rel_ids].tolist() == [0, 1]


@pytest.mark.parametrize("res", [16, 24, 32])
def test_pixels_codes_tokens_shapes(res):
    tok = _tokenizer()
    imgs = np.random.default_rng(0).integers(0, 256, (3, res, res, 3), dtype=np.uint8)
    ids = tok.encode(imgs)
    lat = res // 2
    assert ids.shape == (3, 3 + lat * (lat + 1) + 1)
    out = tok.decode(ids)
    assert out.shape == (3, res, res, 3) and out.dtype == np.uint8
    # batched == one by one
    assert torch.equal(tok.encode(imgs[1:2])[0], ids[1])
    with pytest.raises(ValueError, match="multiple"):
        tok.encode(np.zeros((1, 15, 15, 3), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        tok.encode(np.zeros((1, 16, 16, 3), np.float32))


def test_pixel_conversion_matches_reference_formula():
    x = np.array([[[[0, 128, 255]]]], dtype=np.uint8)
    t = pixels_to_tensor(x)
    torch.testing.assert_close(t[0, :, 0, 0], torch.tensor([-1.0, 128 / 255 * 2 - 1, 1.0]))
    # (x + 1) / 2 * 255 truncated: 0.999 -> 254.87 -> 254; values beyond [-1, 1] clamp
    back = tensor_to_pixels(torch.tensor([-2.0, 0.999, 0.0]).view(1, 3, 1, 1))
    assert back[0, 0, 0].tolist() == [0, 254, 127]


def _synthetic(n, res, rng):
    """Structured frames: a flat background colour and one axis-aligned coloured rectangle."""
    imgs = np.empty((n, res, res, 3), np.uint8)
    for i in range(n):
        imgs[i] = rng.integers(0, 256, 3)
        y0, x0 = rng.integers(0, res // 2, 2)
        h, w = rng.integers(res // 4, res // 2, 2)
        imgs[i, y0 : y0 + h, x0 : x0 + w] = rng.integers(0, 256, 3)
    return imgs


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / mse)


@pytest.mark.slow
def test_trained_vqgan_reconstructs_better_than_untrained():
    # one thread: small convs gain nothing from two, and OpenMP spinning on a loaded CPU costs minutes
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _train_and_compare()
    finally:
        torch.set_num_threads(threads)


def _train_and_compare():
    rng = np.random.default_rng(0)
    res = 16
    tok = _tokenizer(n_codes=64, res=res, mult=(1, 2))
    vq = tok.vqgan
    held_out = _synthetic(32, res, np.random.default_rng(123))
    before = _psnr(tok.decode(tok.encode(held_out)), held_out)
    vq.train()
    opt = torch.optim.Adam(vq.parameters(), lr=2e-3)
    for _ in range(300):
        x = pixels_to_tensor(_synthetic(16, res, rng))
        rec, vq_loss = vq.reconstruct(x)
        loss = (rec - x).abs().mean() + vq_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    vq.eval()
    after = _psnr(tok.decode(tok.encode(held_out)), held_out)  # through pixels -> codes -> tokens -> pixels
    assert after > before + 3.0, (before, after)  # measured ~ +4 dB (10.2 -> 14.3) with 300 steps of 16
