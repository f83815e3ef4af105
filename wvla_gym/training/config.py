"""Dataclass configs of the three training stages (``wvla-gym train vq|model|judge``).

Every stage records a run identity in its ``out`` folder (``run_identity.json``): every field below except
``out``, ``log_every``, ``checkpoint_every``, ``progress``, ``stop_at`` and ``restart`` (they never change the
result), plus the data files' content hashes (and the VQ's / world model's hash). ``steps`` / ``epochs`` set the
learning-rate schedule, so they are part of it: extending a finished run is a new run (``--restart`` or a new
folder). Rerunning the same command resumes from the last checkpoint; other settings are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class VQTrainConfig:
    """Train a small Chameleon-family VQGAN image tokenizer on recorded agent-view frames."""

    data: list[str] = field(default_factory=list)
    """LIBERO-layout HDF5 files or folders of them (every ``*.hdf5`` inside)."""
    out: str = "runs/vq"
    resolution: int = 64
    downsample: int = 8
    """pixels per code side: 64 px / 8 -> an 8x8 code grid"""
    n_codes: int = 512
    embed_dim: int = 32
    latent_channels: int = 64
    base_channels: int = 32
    channel_multiplier: tuple[int, ...] = (1, 2, 2, 4)
    """one entry per level; its length sets the downsampling (len - 1 halvings)"""
    num_res_blocks: int = 1
    steps: int = 2000
    """length of the learning-rate schedule"""
    stop_at: int | None = None
    """stop (checkpoint and write the VQ) after this many steps, keeping the schedule of ``steps``"""
    batch_size: int = 32
    lr: float = 1e-3
    heldout_episodes: int = 2
    """the last N episodes (in file/demo order) are held out for the reconstruction PSNR"""
    restart_dead_every: int = 100
    """re-seed codes unused for this many steps with random encoder outputs (avoids codebook collapse)"""
    max_frames: int = 20000
    seed: int = 0
    threads: int = 1
    log_every: int = 50
    checkpoint_every: int = 100
    """a kill loses at most this many steps (rerun the same command to resume)"""
    progress: bool = True
    restart: bool = False
    """delete this folder's outputs and start over (otherwise an existing run is resumed, and only with the
    same settings: a folder made with other settings is refused)"""


@dataclass
class ModelTrainConfig:
    """Joint action + world-model training of a small Chameleon-architecture WorldVLA model."""

    data: list[str] = field(default_factory=list)
    """LIBERO-layout HDF5 files or folders of them"""
    vq: str = "runs/vq"
    """folder written by ``wvla-gym train vq`` (the frozen image tokenizer)"""
    out: str = "runs/model"
    split: str = "train"
    """"train" (WorldVLA's split minus val_ind / val_ood) or "all" """
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 768
    action_chunk: int = 5
    history: int = 2
    world_weight: float = 1.0
    """world-model samples per action sample in each batch; 0 = action-only (the ablation)"""
    world_history: int = 1
    """frame-action pairs in the world-model prompt (1: WorldVLA's his=1; more: the world model sees the
    recent past, so it can keep what one blurred frame loses)"""
    world_context_noise: float = 0.0
    """share of the world-model prompt's image codes replaced by random codes in each training batch (fresh
    per step; targets untouched), so the model learns to recover from its own imperfect frames"""
    extra_world_samples: tuple[str, ...] = ()
    """sample files of extra world-model samples, appended to the data's own (``scripts/self_forcing_samples.py``:
    the world model's own rolled-out frames as the prompt, the recorded next frame as the target); their hashes
    are part of the run identity"""
    extra_world_repeat: int = 1
    """how many times each extra world sample is added (its weight among the world samples drawn)"""
    init_from: str | None = None
    """start from these LM weights (a ``save_pretrained`` folder, e.g. ``<train model --out>/model`` or its
    ``ckpt``, of the same size and VQ) instead of a random init: more steps on a new schedule, or fine-tuning
    on new data. Its action statistics are kept (the action tokens keep their meaning); the report counts the
    training action values outside them. Its weights' hash is part of the run identity."""
    image_loss_weight: float = 0.04
    z_loss_weight: float = 1e-5
    steps: int = 2000
    """length of the learning-rate schedule"""
    stop_at: int | None = None
    """stop (and write the model) after this many steps, keeping the schedule of ``steps``"""
    batch_size: int = 16
    lr: float = 1e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 50
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    checkpoint_every: int = 100
    """a kill loses at most this many steps"""
    seed: int = 0
    threads: int = 1
    log_every: int = 10
    progress: bool = True
    device: str = "cpu"
    """"cpu" or "cuda"; under torchrun (WORLD_SIZE > 1) "cuda" means cuda:LOCAL_RANK, one GPU per process"""
    restart: bool = False
    """delete this folder's outputs and start over (otherwise an existing run is resumed, and only with the
    same settings: a folder made with other settings is refused)"""


@dataclass
class JudgeTrainConfig:
    """Train a success judge (small CNN) on recorded episodes: last frames of successful episodes vs earlier ones."""

    data: list[str] = field(default_factory=list)
    out: str = "runs/judge"
    positive_last: int = 3
    """the last N frames of each successful episode are positives"""
    negative_gap: int = 15
    """frames at least this many steps before the end are negatives (the frames in between are ambiguous)"""
    heldout_episodes_per_file: int = 2
    """the last N demos of each file are held out for precision/recall"""
    input_size: int = 64
    epochs: int = 15
    batch_size: int = 64
    lr: float = 3e-3
    threshold: float = 0.5
    seed: int = 0
    threads: int = 1
    world_model: str | None = None
    """also train on this checkpoint's open-loop imagined replays of the same episodes (a judge for the
    imagined env must see the world model's rendering); held-out metrics are reported for both kinds"""
    log_every: int = 10
    """optimiser steps between lines of ``judge_log.jsonl``"""
    checkpoint_every: int = 200
    """optimiser steps between checkpoints: a kill loses at most this many (rerun the same command to resume)"""
    stop_at: int | None = None
    """stop (checkpoint and write the judge) after this many optimiser steps, keeping the schedule of ``epochs``"""
    progress: bool = True
    restart: bool = False
    """delete this folder's outputs and start over (otherwise an existing run is resumed, and only with the
    same settings: a folder made with other settings is refused)"""


@dataclass
class PackageConfig:
    """Assemble a shippable model folder (e.g. ``wvla_gym/assets/default``) from the three stages' outputs."""

    model: str = "runs/model/model"
    """folder with config.json + model.safetensors (``<train model --out>/model``)"""
    judge: str | None = "runs/judge"
    vq: str | None = "runs/vq"
    """VQ run folder: its ``vq_report.json`` is copied for the record"""
    data_manifest: str | None = None
    """the recorder's ``manifest.json`` of the training data"""
    out: str = "wvla_gym/assets/default"
    max_mb: float = 30.0
    constrain_actions: bool = True
    """default for WorldVLAAgent(constrain_actions=None): force well-formed action blocks (small models need it)"""
    share_vq_with: str | None = None
    """a packaged checkpoint folder with the same VQ (e.g. the default, when packaging its ``world_model/``): the
    VQ weights are left out and loaded from there (``config.json`` ``vq_weights`` + ``vq_sha256``); the budget
    ``max_mb`` then counts that folder as a whole"""
    dtype: str = "float32"
    """storage dtype of the LM weights: ``float32`` or ``float16`` (the VQ always stays float32; loading on CPU
    casts float16 back to float32)"""


@dataclass
class BCTrainConfig:
    """Train a visuomotor behaviour-cloning policy (small ResNet-style CNN on the agent-view image + proprio
    state -> an action chunk) on LIBERO-layout demo files; the policy after every epoch is kept."""

    data: list[str] = field(default_factory=list)
    """LIBERO-layout HDF5 demo files or folders of them (code files: ``wvla-gym data unpack`` first)"""
    out: str = "runs/bc"
    max_episodes: int | None = None
    """train on the first N episodes (file / demo order) only: fewer demos give a weaker policy"""
    resolution: int = 64
    """image side the policy sees (frames of another size are resized; the policy refuses other sizes)"""
    chunk: int = 8
    """actions predicted (and executed open-loop) per observation"""
    channels: tuple[int, ...] = (32, 64, 128, 256)
    """one residual stage per entry (ResNet-18's widths / 2); every stage after the first halves the size"""
    blocks: int = 1
    """residual blocks per stage (ResNet-18 has 2)"""
    hidden: int = 256
    use_state: bool = True
    """also feed the 8-dim proprio state (eef position, axis-angle, gripper)"""
    loss: str = "l1"
    """"l1" or "mse", on actions normalised to the data's min / max"""
    shift: int = 4
    """random-shift augmentation: pad by this many pixels and crop back at a random offset (0: off)"""
    epochs: int = 20
    """length of the learning-rate schedule; the policy after every epoch is saved under ``epochs/``"""
    stop_at: int | None = None
    """stop (checkpoint and write the policy) after this many optimiser steps, keeping the schedule of ``epochs``"""
    batch_size: int = 64
    lr: float = 1e-3
    warmup_steps: int = 50
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 1
    log_every: int = 10
    checkpoint_every: int = 200
    """a kill loses at most this many optimiser steps (every epoch's end is checkpointed too)"""
    progress: bool = True
    restart: bool = False
    """delete this folder's outputs and start over (otherwise an existing run is resumed, and only with the
    same settings: a folder made with other settings is refused)"""


@dataclass
class KNNTrainConfig:
    """Build a nearest-neighbour policy's index: every recorded frame's VQ codes -> the demo's next actions."""

    data: list[str] = field(default_factory=list)
    """code files (``*.codes.npz``), LIBERO-layout HDF5 demo files (encoded with the VQ) or folders of them"""
    out: str = "runs/knn"
    vq: str | None = None
    """checkpoint folder whose VQ encodes frames (and made the code files); None: the embedded default"""
    max_episodes: int | None = None
    """index the first N episodes (file / demo order) only: fewer demos give a weaker policy"""
    chunk: int = 8
    """K: actions of the neighbour's demo executed open-loop per lookup"""
    history: int = 1
    """frames per key: 1 (the current frame) or 2 (the current and the previous frame)"""
    k: int = 1
    """neighbours per lookup (their chunks are averaged, or one is drawn with --temperature)"""
    temperature: float = 0.0
    """> 0: draw one of the k neighbours with probability exp(-hamming / temperature) instead of averaging"""
    noise: float = 0.0
    """std of Gaussian noise added to the actions (reseeded per episode)"""
