"""Loading WorldVLA checkpoints: the released layout and this project's own compact format.

Released layout (Hugging Face repo ``Alibaba-DAMO-Academy/WorldVLA``; the same tree locally)::

    <root>/
      chameleon/tokenizer/{text_tokenizer.json, vqgan.yaml, vqgan.ckpt}   # Meta's originals
      chameleon/base_model/tokenizer.json   (or <root>/base_model/)    # the Lumina-mGPT-7B-768 tokenizer
      model_256/libero_{spatial,object,goal,10}/                         # one checkpoint per suite
          config.json, model.safetensors.index.json, model-0000k-of-0000n.safetensors

RynnVLA-002 (``Alibaba-DAMO-Academy/RynnVLA-002``) uses the same files per checkpoint, in
``VLA_model_256/``, ``World_model_512/`` and ``Action_World_model_512/`` (each ``libero_{spatial,object,goal,10}``),
with ``time_horizon`` / ``action_dim`` in ``config.json`` and the continuous head's ``action_head.*`` tensors in
the shards. Its repository has no tokenizer files: they are looked for in ``chameleon/`` beside the model folders
(put WorldVLA's there) or given with ``tokenizer_dir=`` / ``base_model_dir=``. A checkpoint whose config or
weights carry the head loads as :class:`~wvla_gym.model.modeling_rynnvla.RynnVLAForConditionalGeneration`, the
head's 45 tensors 1:1 (an unexpected or missing key is an error naming it).

* ``q_norm`` / ``k_norm`` weight and bias are stored as ``(1, head_dim)`` and repeated per head on load
  (never ``ignore_mismatched_sizes``); ``model.vqmodel.*`` is not in the LM shards, the VQGAN comes from
  ``vqgan.{ckpt,yaml}``; image ids come from ``text_tokenizer.json``'s ``IMGIMG*`` names.
* Hub ids (``org/repo/sub/folder``) are fetched with ``huggingface_hub``; offline, a clear error says which
  files are needed.

Own format (``save_pretrained``): ``config.json`` (``model_type: worldvla``), ``model.safetensors`` (LM + VQGAN,
per-head norms), and ``tokenizer.json`` when the text tokenizer is a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import ChameleonConfig
from transformers.models.chameleon.modeling_chameleon import ChameleonRotaryEmbedding

from .action_tokenizer import LIBERO_MAX, LIBERO_MIN, RYNNVLA_LIBERO_MAX, RYNNVLA_LIBERO_MIN
from .configuration_rynnvla import RynnVLAConfig
from .configuration_worldvla import WorldVLAConfig
from .image_tokenizer import ChameleonVQGAN, check_finite_tensors, load_meta_vqgan
from .modeling_rynnvla import RynnVLAForConditionalGeneration
from .modeling_worldvla import WorldVLAForConditionalGeneration
from .processing_worldvla import ByteTextTokenizer, HFTextTokenizer, TextTokenizer
from .token_layout import TokenLayout, read_vocab

logger = logging.getLogger(__name__)

RELEASED_LAYOUT_HELP = """expected the released WorldVLA layout:
  <root>/chameleon/tokenizer/text_tokenizer.json, vqgan.yaml, vqgan.ckpt
  <root>/chameleon/base_model/tokenizer.json      (Lumina-mGPT-7B-768 tokenizer; <root>/base_model/ also works)
  <root>/model_256/libero_spatial/config.json + model.safetensors.index.json + model-0000k-of-0000n.safetensors
or RynnVLA-002's, with the same chameleon/ folders beside the model folders:
  <root>/VLA_model_256/libero_spatial/ (also World_model_512/..., Action_World_model_512/...), same files
and pass the checkpoint folder (e.g. <root>/model_256/libero_spatial), or pass a folder written by
wvla_gym.model.save_pretrained (config.json with model_type "worldvla" + model.safetensors)."""

#: Where the files that no RynnVLA-002 (and no per-suite WorldVLA) checkpoint folder contains come from.
TOKENIZER_SOURCES = (
    "get chameleon/tokenizer/ (text_tokenizer.json, vqgan.yaml, vqgan.ckpt: Meta's Chameleon files, Chameleon "
    "Research License) from the Hugging Face repo Alibaba-DAMO-Academy/WorldVLA (folder chameleon/tokenizer; also "
    "original_tokenizers/ of Alpha-VLLM/Chameleon_7B_mGPT) and the base tokenizer.json from Alpha-VLLM/"
    "Lumina-mGPT-7B-768 into chameleon/base_model/, or pass tokenizer_dir= / base_model_dir="
)

NORM_KEY = re.compile(r"model\.layers\.\d+\.self_attn\.([qk])_norm\.(weight|bias)$")
VQ_PREFIX = "model.vqmodel."
ACTION_HEAD_PREFIX = "action_head."
IGNORED_LM_PREFIXES = (VQ_PREFIX,)  # the VQGAN comes from vqgan.ckpt
#: ``config.json`` fields that only RynnVLA-002 checkpoints carry (``ChameleonXLLMXConfig`` of its code).
RYNNVLA_CONFIG_FIELDS = ("time_horizon", "action_dim")


#: ``model_type`` values of released (Chameleon-based) checkpoints; ours is ``WorldVLAConfig.model_type``.
RELEASED_MODEL_TYPES = ("chameleon", "chameleon_xllmx")


def read_json_object(path: Path) -> dict[str, Any]:
    """A JSON file that must hold an object; ``ValueError`` naming the file otherwise."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object ({{...}}), got a JSON {type(data).__name__}")
    return data


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """``safetensors.torch.load_file`` with the file named in the error (truncated or random files)."""
    try:
        return load_file(str(path))
    except Exception as e:  # SafetensorError, OSError, ...: the rust error text does not name the file
        raise ValueError(
            f"{path}: not a readable safetensors file ({type(e).__name__}: {e}); the download may be truncated or corrupt"
        ) from e


def _config_from_file(folder: Path) -> WorldVLAConfig:
    cfg_path = folder / "config.json"
    raw = read_json_object(cfg_path)
    cls = RynnVLAConfig if raw.get("model_type") == RynnVLAConfig.model_type else WorldVLAConfig
    try:
        return cls.from_pretrained(folder)
    except Exception as e:  # ValueError / TypeError / strict-dataclass errors from the config's own checks
        raise ValueError(f"{cfg_path}: invalid {'RynnVLA-002' if cls is RynnVLAConfig else 'WorldVLA'} config ({e})") from e


def _cpu_float16_to_float32(model: WorldVLAForConditionalGeneration, device: str | torch.device, source: Path) -> None:
    """float16 weights with no dtype requested on CPU: cast to float32 (CPU float16 kernels are slow/partial)."""
    if torch.device(device).type != "cpu":
        return
    if any(p.dtype == torch.float16 for p in model.parameters()):
        logger.warning("%s holds float16 weights; casting to float32 for CPU (pass dtype= to choose)", source)
        model.to(torch.float32)


def check_device(device: str | torch.device) -> torch.device:
    """A usable torch device, else ``ValueError`` naming it (not torch's AssertionError on a CPU-only build)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device={device!r} is not a torch device ('cpu', 'cuda', 'cuda:1', ...): {e}") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise ValueError(f"device={device!r} but {why} (torch {torch.__version__}); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r} but only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device={device!r} but MPS is not available in this torch build/machine; use device='cpu'")
    return dev


# ---- cross-checks of config, weights and VQ before anything is loaded ----------------------------------------
#: (tensor, axis, config field) whose size the config fixes: a mismatch names the field, not 300 tensors.
_SHAPE_PROBES: tuple[tuple[str, int, str], ...] = (
    ("model.embed_tokens.weight", 1, "hidden_size"),
    ("model.embed_tokens.weight", 0, "vocab_size"),
    ("lm_head.weight", 1, "hidden_size"),
    ("lm_head.weight", 0, "vocab_size"),
    ("model.layers.0.mlp.gate_proj.weight", 0, "intermediate_size"),
    ("model.layers.0.self_attn.q_norm.weight", 0, "num_attention_heads"),
    ("model.layers.0.self_attn.k_norm.weight", 0, "num_key_value_heads"),
    ("model.vqmodel.quantize.embedding.weight", 0, "vq_config.num_embeddings"),
    ("model.vqmodel.quantize.embedding.weight", 1, "vq_config.embed_dim"),
)


def _config_value(config: WorldVLAConfig, field: str) -> Any:
    obj: Any = config
    for part in field.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else getattr(obj, part, None)
    return obj


def check_weight_shapes(
    expected: dict[str, torch.Size], weights: dict[str, torch.Tensor], config: WorldVLAConfig, *,
    config_file: str, weights_file: str,
) -> None:
    """Every tensor of ``weights`` that the model has must have the model's shape; otherwise one short
    ``ValueError`` naming both files, the config field(s) that disagree with the weights and a few tensors
    (instead of torch's "size mismatch" list, tens of KB for a wrong ``hidden_size``)."""
    bad = [(k, tuple(expected[k]), tuple(v.shape)) for k, v in weights.items()
           if k in expected and tuple(v.shape) != tuple(expected[k])]
    if not bad:
        return
    fields: dict[str, str] = {}
    for key, axis, field in _SHAPE_PROBES:
        if key in weights and key in expected and weights[key].ndim > axis and field not in fields:
            have, want = int(weights[key].shape[axis]), int(expected[key][axis])
            if have != want:
                fields[field] = f"{field}={_config_value(config, field)} but {key} has {have} (shape {tuple(weights[key].shape)})"
    what = "; ".join(fields.values()) if fields else "the weights were saved for a different model"
    sample = ", ".join(f"{k} {have} (expected {want})" for k, want, have in bad[:3])
    raise ValueError(
        f"{weights_file} does not match {config_file}: {what}. {len(bad)} tensor shape(s) differ, e.g. {sample}; "
        "fix the config or use the weights saved with it"
    )


def check_resolution_matches_vq(config: WorldVLAConfig, config_file: str) -> None:
    """This project's models (compact layout) are trained on frames at their VQGAN's resolution (the LM only
    ever saw that code grid): a different ``resolution`` would load and imagine frames of another size."""
    if config.token_layout.name != "compact":  # released layout: Meta's VQGAN, resolution from the folder name
        return
    vq_res = _config_value(config, "vq_config.resolution")
    if vq_res is not None and int(vq_res) != int(config.resolution):
        raise ValueError(
            f"{config_file}: resolution={config.resolution} but vq_config.resolution={vq_res}; this checkpoint's "
            f"model was trained on {vq_res}-px frames (its VQGAN's resolution): set resolution to {vq_res}"
        )


# ---- resolving paths / Hub ids -------------------------------------------------------------------------------
def resolve_checkpoint(path_or_hub_id: str | os.PathLike) -> Path:
    """A local folder as is; otherwise ``org/repo[/sub/folder]`` downloaded with huggingface_hub."""
    p = Path(path_or_hub_id).expanduser()
    if p.exists():
        return p
    s = os.fspath(path_or_hub_id)
    parts = s.strip("/").split("/")
    if len(parts) < 2 or s.startswith((".", "/", "~")):
        raise FileNotFoundError(f"checkpoint folder {s!r} does not exist.\n{RELEASED_LAYOUT_HELP}")
    repo_id, sub = "/".join(parts[:2]), "/".join(parts[2:])
    patterns = ["chameleon/tokenizer/*", "chameleon/base_model/*", "base_model/*"]
    patterns += [f"{sub}/*"] if sub else ["*.json", "*.safetensors"]
    try:
        from huggingface_hub import snapshot_download

        root = Path(snapshot_download(repo_id=repo_id, allow_patterns=patterns))
    except Exception as e:  # offline, unknown repo, auth...
        raise FileNotFoundError(
            f"could not fetch {s!r} from the Hugging Face Hub ({type(e).__name__}: {e}). Download the repository "
            f"on a machine with network access and pass the local folder instead.\n{RELEASED_LAYOUT_HELP}"
        ) from e
    return root / sub if sub else root


def _require(path: Path | None, what: str, start: Path) -> Path:
    if path is None or not path.exists():
        raise FileNotFoundError(f"missing {what} (searched from {start} and its parents).\n{RELEASED_LAYOUT_HELP}")
    return path


# ---- shared model materialisation -----------------------------------------------------------------------------
def _build_on_meta(config: WorldVLAConfig, attn_implementation: str) -> WorldVLAForConditionalGeneration:
    config._attn_implementation = attn_implementation
    cls = RynnVLAForConditionalGeneration if isinstance(config, RynnVLAConfig) else WorldVLAForConditionalGeneration
    with torch.device("meta"):  # no random init of weights that are about to be overwritten (7B-sized models)
        return cls(config)


def _finalize(model: WorldVLAForConditionalGeneration, device: str | torch.device, dtype: torch.dtype | None):
    """Recreate the non-persistent buffers (built on meta), then move/cast. The VQGAN stays float32."""
    cfg = model.config
    model.model.rotary_emb = ChameleonRotaryEmbedding(cfg)
    model.image_token_ids = torch.as_tensor(cfg.token_layout.image_ids, dtype=torch.long)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"weights missing after load: {left[:8]} (total {len(left)})")
    vq = model.model.vqmodel
    if dtype is not None:
        model.to(dtype=dtype)
    vq.to(torch.float32)  # the image tokenizer feeds float32 pixels
    model.model.rotary_emb.to(torch.float32)
    model.to(device)
    return model.eval()


# ---- own format ----------------------------------------------------------------------------------------------
def save_pretrained(
    model: WorldVLAForConditionalGeneration, out_dir: str | os.PathLike, text_tokenizer: TextTokenizer | None = None
) -> Path:
    """Write config.json + model.safetensors (+ tokenizer.json when the text tokenizer is a file)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(out)
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(sd, str(out / "model.safetensors"), metadata={"format": "pt", "wvla_format": "1"})
    if model.config.text_tokenizer == "file":
        if not isinstance(text_tokenizer, HFTextTokenizer):
            raise ValueError("config.text_tokenizer == 'file' needs the HFTextTokenizer to copy its tokenizer.json")
        if Path(text_tokenizer.path).resolve() != (out / "tokenizer.json").resolve():
            shutil.copyfile(text_tokenizer.path, out / "tokenizer.json")
    return out


def vq_state_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the ``model.vqmodel.*`` tensors of a state dict (names, dtypes, shapes, bytes)."""
    h = hashlib.sha256()
    for name, t in sorted(state_dict.items()):
        if name.startswith(VQ_PREFIX):
            a = t.detach().cpu().contiguous()
            h.update(f"{name}|{a.dtype}|{tuple(a.shape)}|".encode())
            h.update(a.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _shared_vq(config: WorldVLAConfig, folder: Path) -> dict[str, torch.Tensor]:
    """The VQ weights of a checkpoint that shares another's VQ (``config.json``: ``vq_weights``, ``vq_sha256``).

    A world model packaged beside a policy with the same VQ (the embedded default's ``world_model/``) ships
    its LM only; the digest makes sure the VQ found there is the one it was trained on."""
    rel = getattr(config, "vq_weights", None)
    if rel is None:
        return {}
    cfg_file = folder / "config.json"
    if not isinstance(rel, str):
        raise ValueError(f"{cfg_file}: vq_weights={rel!r}; expected a path (relative to the folder) to a safetensors file")
    host = (folder / rel).resolve()
    if not host.is_file():
        raise FileNotFoundError(f"{cfg_file}: vq_weights points to {host}, which does not exist")
    vq = {k: v for k, v in read_safetensors(host).items() if k.startswith(VQ_PREFIX)}
    if not vq:
        raise ValueError(f"{cfg_file}: vq_weights {host} holds no {VQ_PREFIX}* tensors")
    want = getattr(config, "vq_sha256", None)
    if want is not None and vq_state_digest(vq) != want:
        raise ValueError(f"{cfg_file}: the VQ in {host} is not the one this model was trained on (vq_sha256 differs)")
    return vq


def _load_own(
    folder: Path, device: str | torch.device, dtype: torch.dtype | None, attn_implementation: str
) -> tuple[WorldVLAForConditionalGeneration, TextTokenizer]:
    config = _config_from_file(folder)
    check_resolution_matches_vq(config, str(folder / "config.json"))
    weights = _require(folder / "model.safetensors", "model.safetensors", folder)
    model = _build_on_meta(config, attn_implementation)
    sd = read_safetensors(weights)
    check_finite_tensors(sd, weights)
    sd.update(_shared_vq(config, folder))
    expected = {k: v.shape for k, v in model.state_dict().items()}
    missing, unexpected = sorted(expected.keys() - sd.keys()), sorted(sd.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(f"{weights}: keys do not match the config; missing={missing[:8]}, unexpected={unexpected[:8]}")
    check_weight_shapes(expected, sd, config, config_file=str(folder / "config.json"), weights_file=str(weights))
    model.load_state_dict(sd, strict=False, assign=True)
    if dtype is None:
        _cpu_float16_to_float32(model, device, weights)
    model = _finalize(model, device, dtype)
    if config.text_tokenizer == "file":
        tok: TextTokenizer = HFTextTokenizer(_require(folder / "tokenizer.json", "tokenizer.json", folder))
    else:
        tok = ByteTextTokenizer(config.token_layout.text_byte_offset)
    return model, tok


# ---- released format -----------------------------------------------------------------------------------------
def released_lm_state_dict(folder: Path, num_heads: int, num_kv_heads: int) -> dict[str, torch.Tensor]:
    """Read the (sharded) safetensors of a released checkpoint; repeat (1, head_dim) q/k norms per head."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise ValueError(f"{index}: no 'weight_map'")
        shards = sorted(set(weight_map.values()))
    elif (folder / "model.safetensors").exists():
        shards = ["model.safetensors"]
    else:
        raise FileNotFoundError(f"{folder}: no model.safetensors.index.json or model.safetensors.\n{RELEASED_LAYOUT_HELP}")
    sd: dict[str, torch.Tensor] = {}
    for name in shards:
        shard = folder / name
        if not shard.exists():
            raise FileNotFoundError(f"shard {name} listed in {index.name} is missing from {folder}.\n{RELEASED_LAYOUT_HELP}")
        shard_sd = read_safetensors(shard)
        check_finite_tensors(shard_sd, shard)
        sd.update(shard_sd)
    out = {}
    for k, v in sd.items():
        if k.startswith(IGNORED_LM_PREFIXES):
            logger.warning("ignoring %s (the VQGAN is loaded from vqgan.ckpt)", k)
            continue
        m = NORM_KEY.match(k)
        if m:
            heads = num_heads if m.group(1) == "q" else num_kv_heads
            if v.ndim == 2 and v.shape[0] == 1:
                v = v.repeat_interleave(heads, dim=0)  # one (1, head_dim) row per model-parallel shard -> per head
            elif not (v.ndim == 2 and v.shape[0] == heads):
                raise ValueError(f"{k}: expected shape (1, head_dim) or ({heads}, head_dim), got {tuple(v.shape)}")
        out[k] = v
    return out


def released_weight_names(folder: Path) -> list[str]:
    """Tensor names of a released checkpoint, read from its index (or the single file's header) without
    loading any tensor."""
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json_object(index).get("weight_map")
        return sorted(weight_map) if isinstance(weight_map, dict) else []
    single = folder / "model.safetensors"
    if single.exists():
        from safetensors import safe_open

        try:
            with safe_open(str(single), framework="pt") as f:
                return sorted(f.keys())
        except Exception as e:  # the loader names the file when it reads it; here it only decides the class
            logger.debug("could not read the header of %s: %s", single, e)
    return []


def is_rynnvla_checkpoint(folder: Path) -> bool:
    """A released checkpoint of RynnVLA-002: ``config.json`` has ``time_horizon`` / ``action_dim`` or the
    weights hold ``action_head.*`` tensors (World_model_512 checkpoints carry an untrained head too)."""
    raw = read_json_object(folder / "config.json") if (folder / "config.json").exists() else {}
    if any(k in raw for k in RYNNVLA_CONFIG_FIELDS):
        return True
    return any(k.startswith(ACTION_HEAD_PREFIX) for k in released_weight_names(folder))


def released_config(
    folder: Path, layout: TokenLayout, vq_config: Any, overrides: dict[str, Any], *, rynnvla: bool = False
) -> WorldVLAConfig:
    """The config of a released checkpoint: sizes from its ``config.json``, the token layout and VQGAN from the
    tokenizer files, the protocol's statistics; ``rynnvla`` -> a :class:`RynnVLAConfig` (K = ``time_horizon``,
    the VLA's min/max, the two-view world model's training prompt)."""
    cfg_path = _require(folder / "config.json", "config.json", folder)
    raw = read_json_object(cfg_path)
    fields = set(ChameleonConfig.__dataclass_fields__) if hasattr(ChameleonConfig, "__dataclass_fields__") else set()
    drop = {"vocabulary_map", "vq_config", "model_type", "architectures", "transformers_version", "torch_dtype", "dtype"}
    kw = {k: v for k, v in raw.items() if k in fields and k not in drop}
    if "rope_parameters" not in raw and "rope_theta" in raw:  # transformers 4.x config
        kw["rope_parameters"] = {"rope_type": "default", "rope_theta": float(raw["rope_theta"])}
    path_s = str(folder).lower()
    # K is not in the released config: the suites' chunk sizes are 5, except libero_10 (docs/protocol.md §3)
    k = raw.get("time_horizon") or (10 if re.search(r"libero_10(\b|$|/)", path_s) else 5)
    res = 512 if "512" in folder.name or "model_512" in path_s else 256
    kw.update(
        vocab_size=layout.vocab_size,
        layout=layout.to_dict(),
        vq_config=vq_config.to_dict(),
        action_min=list(LIBERO_MIN),
        action_max=list(LIBERO_MAX),
        action_chunk=int(k),
        history=2,
        resolution=res,
        text_tokenizer="file",
        mask_image_logits=bool(raw.get("mask_image_logits", True)),
        z_loss_weight=float(raw.get("z_loss_weight", 1e-5)),
        image_loss_weight_ids="reference",
    )
    cls: type[WorldVLAConfig] = WorldVLAConfig
    if rynnvla:
        cls = RynnVLAConfig
        # ChameleonXLLMXConfig's defaults when config.json lacks the fields (action_dim 7, time_horizon 5)
        k = raw.get("time_horizon", 5)
        kw.update(
            time_horizon=k,
            action_dim=raw.get("action_dim", 7),
            action_chunk=k,
            action_min=list(RYNNVLA_LIBERO_MIN),
            action_max=list(RYNNVLA_LIBERO_MAX),
            # every released eval script passes --unmask_image_logits: greedy action decoding sees all ids
            mask_image_logits=False,
        )
        if "time_horizon" in overrides:  # K follows the head's size; action_chunk mirrors it
            kw["action_chunk"] = overrides["time_horizon"]
    kw.update(overrides)
    try:
        return cls(**kw)
    except Exception as e:  # name the file (and the overrides) the bad field came from
        raise ValueError(f"{cfg_path}: invalid config (with overrides {sorted(overrides)}): {e}") from e


def _search_dirs(folder: Path, levels: int = 3) -> list[Path]:
    """The folder and its parents, where a checkpoint's side files are looked for (nearest first)."""
    return [folder, *list(folder.parents)[:levels]]


def _missing_side_file(what: str, looked_in: list[Path], rynnvla: bool) -> FileNotFoundError:
    where = ", ".join(str(p) for p in looked_in)
    family = "RynnVLA-002 checkpoints do not contain it; " if rynnvla else ""
    return FileNotFoundError(f"missing {what}; looked in: {where}. {family}{TOKENIZER_SOURCES}.\n{RELEASED_LAYOUT_HELP}")


def _released_tokenizer_files(
    folder: Path, tokenizer_dir: str | os.PathLike | None, base_model_dir: str | os.PathLike | None, rynnvla: bool
) -> tuple[Path, Path]:
    """``(chameleon/tokenizer folder, base tokenizer.json)``: given, or found beside the model folders."""
    for name, value in (("tokenizer_dir", tokenizer_dir), ("base_model_dir", base_model_dir)):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise TypeError(f"{name}={value!r}; expected None or a folder (str or os.PathLike)")
    what = "chameleon/tokenizer/ (text_tokenizer.json, vqgan.yaml, vqgan.ckpt)"
    if tokenizer_dir is not None:
        tok_dir = Path(tokenizer_dir).expanduser()
        if not tok_dir.is_dir():
            raise _missing_side_file(f"{what}: tokenizer_dir={os.fspath(tokenizer_dir)!r} is not a folder", [tok_dir], rynnvla)
    else:
        looked = [d / "chameleon" / "tokenizer" for d in _search_dirs(folder)]
        tok_dir = next((d for d in looked if d.is_dir()), None)
        if tok_dir is None:
            raise _missing_side_file(what, looked, rynnvla)
    for fname in ("text_tokenizer.json", "vqgan.yaml", "vqgan.ckpt"):
        if not (tok_dir / fname).exists():
            raise _missing_side_file(f"{tok_dir / fname}", [tok_dir], rynnvla)
    what = "the Lumina-mGPT tokenizer chameleon/base_model/tokenizer.json"
    if base_model_dir is not None:
        looked = [Path(base_model_dir).expanduser() / "tokenizer.json"]
    else:
        looked = [d / sub / "tokenizer.json" for sub in ("chameleon/base_model", "base_model") for d in _search_dirs(folder)]
    base = next((b for b in looked if b.exists()), None)
    if base is None:
        raise _missing_side_file(what, looked, rynnvla)
    return tok_dir, base


def _check_action_head_size(config: RynnVLAConfig, sd: dict[str, torch.Tensor], folder: Path) -> None:
    """The head's query embedding holds K·D·hidden numbers: a mismatch names the config fields, not a tensor list."""
    key = ACTION_HEAD_PREFIX + "action_token_embeddings.weight"
    emb = sd.get(key)
    want = config.time_horizon * config.action_dim * config.hidden_size
    if emb is not None and tuple(emb.shape) != (1, want):
        raise ValueError(
            f"{folder / 'config.json'}: time_horizon={config.time_horizon}, action_dim={config.action_dim} and "
            f"hidden_size={config.hidden_size} give a query embedding of (1, {want}), but {key} has shape "
            f"{tuple(emb.shape)}; fix time_horizon / action_dim or use the weights saved with this config"
        )


def _load_released(
    folder: Path,
    device: str | torch.device,
    dtype: torch.dtype | None,
    attn_implementation: str,
    tokenizer_dir: str | os.PathLike | None = None,
    base_model_dir: str | os.PathLike | None = None,
    trust_pickle: bool | None = None,
    **overrides: Any,
) -> tuple[WorldVLAForConditionalGeneration, TextTokenizer]:
    rynnvla = is_rynnvla_checkpoint(folder)
    tok_dir, base = _released_tokenizer_files(folder, tokenizer_dir, base_model_dir, rynnvla)

    layout = TokenLayout.worldvla(TokenLayout.image_ids_from_vocab(read_vocab(tok_dir / "text_tokenizer.json")))
    vq: ChameleonVQGAN = load_meta_vqgan(tok_dir / "vqgan.ckpt", tok_dir / "vqgan.yaml", trust_pickle=trust_pickle)
    config = released_config(folder, layout, vq.config, overrides, rynnvla=rynnvla)
    if len(layout.image_ids) != vq.config.num_embeddings:
        raise ValueError(f"text_tokenizer.json maps {len(layout.image_ids)} image codes, the VQGAN has {vq.config.num_embeddings}")
    model = _build_on_meta(config, attn_implementation)
    sd = released_lm_state_dict(folder, config.num_attention_heads, config.num_key_value_heads)
    shapes = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("model.vqmodel.")}
    missing, unexpected = sorted(shapes.keys() - sd.keys()), sorted(sd.keys() - shapes.keys())
    if missing or unexpected:
        what = "a RynnVLA-002 model (Chameleon LM + action_head)" if rynnvla else "a Chameleon LM"
        raise ValueError(
            f"{folder}: checkpoint keys do not match {what} of this config; "
            f"missing={missing[:8]} (total {len(missing)}), unexpected={unexpected[:8]} (total {len(unexpected)})"
        )
    if rynnvla:
        _check_action_head_size(config, sd, folder)
    # vocab_size comes from text_tokenizer.json's image ids, every other size from config.json
    check_weight_shapes(
        shapes, sd, config,
        config_file=f"{folder / 'config.json'} (vocab_size from {tok_dir / 'text_tokenizer.json'})",
        weights_file=f"the safetensors shards in {folder}",
    )
    model.load_state_dict(sd, strict=False, assign=True)
    if dtype is None:
        _cpu_float16_to_float32(model, device, folder)
    model.model.vqmodel = vq
    return _finalize(model, device, dtype), HFTextTokenizer(base)


def load_checkpoint(
    path_or_hub_id: str | os.PathLike,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    attn_implementation: str = "sdpa",
    **released_kwargs: Any,
) -> tuple[WorldVLAForConditionalGeneration, TextTokenizer]:
    """Load either format; returns ``(model, text_tokenizer)``. ``released_kwargs``: ``tokenizer_dir``,
    ``base_model_dir``, ``trust_pickle`` (let a legacy ``vqgan.ckpt`` of trusted origin unpickle objects; see
    :func:`~wvla_gym.model.image_tokenizer.read_vqgan_state_dict`) and config overrides such as
    ``action_chunk`` (released checkpoints only; for RynnVLA-002 e.g. ``world_action_norm``,
    ``world_model_prompt``, ``resolution``). A RynnVLA-002 checkpoint gives a
    :class:`~wvla_gym.model.modeling_rynnvla.RynnVLAForConditionalGeneration`.

    Checked at load, each failure naming the file (and the field or tensor): unreadable or non-object JSON,
    truncated/corrupt safetensors, a ``model_type`` that is neither ours nor Chameleon's, invalid config
    fields, NaN/inf weights. float16 weights on CPU without an explicit ``dtype`` are cast to float32."""
    if attn_implementation not in ("sdpa", "eager"):
        raise ValueError(f"attn_implementation must be 'sdpa' or 'eager', got {attn_implementation!r}")
    check_device(device)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be None or a floating torch.dtype (e.g. torch.bfloat16), got {dtype!r}")
    folder = resolve_checkpoint(path_or_hub_id)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder.\n{RELEASED_LAYOUT_HELP}")
    cfg = folder / "config.json"
    if not cfg.exists():
        raise FileNotFoundError(f"{folder}: missing config.json.\n{RELEASED_LAYOUT_HELP}")
    model_type = read_json_object(cfg).get("model_type")
    if model_type in (WorldVLAConfig.model_type, RynnVLAConfig.model_type):
        return _load_own(folder, device, dtype, attn_implementation)
    if model_type is not None and model_type not in RELEASED_MODEL_TYPES:
        raise ValueError(
            f"{cfg}: model_type {model_type!r} is not a WorldVLA/Chameleon checkpoint; expected "
            f"{WorldVLAConfig.model_type!r} or {RynnVLAConfig.model_type!r} (this project's format) or one of "
            f"{list(RELEASED_MODEL_TYPES)} (released)"
        )
    return _load_released(folder, device, dtype, attn_implementation, **released_kwargs)
