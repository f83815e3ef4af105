"""Agreement study: does success in imagination predict success in real LIBERO?

Policies of clearly different quality, each on libero_object tasks, in the real env and in the imagined
env from the same init states, then Pearson / Spearman / MMRV (imagined first, real second), per-episode
accuracy and Cohen's κ, and the scatter + per-task plots:

* ``scripted`` expert, and the expert with action noise 0.3 and 0.6 (privileged: they run closed-loop in
  the real env; their imagined twin replays the exact real action sequence, so the world model and its
  success judge are tested on the same actions),
* ``random`` (uniform actions) and ``zero`` (holds still): near 0 % in reality,
* optionally WorldVLA checkpoints (``--worldvla ckpt_a ckpt_b``), closed-loop in both envs.

Full run (needs the trained default world model or ``--world-model``)::

    python benchmarks/agreement_study.py --out results/agreement_study
    wvla-gym agreement results/agreement_study

Smoke path (minutes on CPU: 1 task, 2 trials, 20-step limit; imagined side uses a tiny random model)::

    python benchmarks/agreement_study.py --tiny --out /tmp/agreement_tiny
"""

from __future__ import annotations

import functools
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import tyro

from wvla_gym.evaluation import EvalConfig, evaluate, read_records
from wvla_gym.evaluation.agreement import agreement_from_records, clipped_action_share, format_table
from wvla_gym.evaluation.policies import RandomPolicy, ReplayPolicy, ZeroPolicy
from wvla_gym.utils.run_identity import path_digest


@dataclass
class StudyArgs:
    out: Path = Path("results/agreement_study")
    tasks: list[int] = field(default_factory=lambda: list(range(10)))
    trials: int = 50
    noise_levels: list[float] = field(default_factory=lambda: [0.0, 0.3, 0.6])
    worldvla: list[str] = field(default_factory=list)
    """WorldVLA checkpoints (e.g. from different training steps) to add as closed-loop policies; ``default`` is
    the embedded default model. Each env slot gets its own agent (history, queue) on one shared runtime."""
    world_model: str | None = None
    """Imagined env checkpoint; default: the embedded default model."""
    resolution: int = 256
    max_episode_steps: int | None = None
    imagined: bool = True
    baselines: list[str] = field(default_factory=lambda: ["random", "zero"])
    """Which of the ``random`` / ``zero`` policies to include. To spread a study over processes, give each a
    subset of the policies (``--noise-levels``, ``--baselines``, ``--worldvla``; empty lists allowed) and the
    same ``--out``: the runner's JSONL appends are safe across processes and finished episodes are skipped."""
    imagined_backend: str = "batched"
    """Runner backend of the imagined side: ``batched`` (all trials of a policy in lockstep, one world-model
    call per step) or ``sync``; the records are identical for greedy world models."""
    num_envs: int = 16
    policies: list[str] = field(default_factory=list)
    """Closed-loop policies of any registered family as ``NAME=SPEC`` (``SPEC`` as ``wvla-gym eval --policy``:
    ``knn:PATH``, ``bc:PATH``, ``worldvla``, ``openpi:HOST:PORT``, ...), each run closed-loop in both envs
    under ``NAME``; options per policy with ``--policy-kwargs NAME='{...}'``."""
    policy_kwargs: list[str] = field(default_factory=list)
    """``NAME=JSON`` options for a ``--policies`` entry (passed to its loader, as ``wvla-gym eval --policy-kwargs``)."""
    sides: list[str] = field(default_factory=lambda: ["real", "imagined"])
    """Which envs to run now (``real``, ``imagined``): the real side does not depend on the world model, so it
    can be run (and committed) before the world model is final; privileged policies' imagined side needs
    their real records."""
    placement: str = "init_state"
    """``init_state`` (the protocol) or ``sampled`` (fresh placements: the robustness column)."""
    perturb_radius: float = 0.0
    """Shift every movable object by a seeded offset within this radius (metres) on either start."""
    imagine_from: str = "codes"
    """The imagined env's ``imagine_from`` (``codes``: the world model's generated codes fed back; ``frames``)."""
    action_guidance: float = 1.0
    """The imagined env's ``action_guidance`` (1 = the plain world model; a record knob when not 1)."""
    name_suffix: str | None = None
    """Appended to every policy name (default: ``@sampled`` / ``@perturbR`` for other starts, as ``wvla-gym
    eval``), so every start mode is its own row in one ``--out``."""
    tiny: bool = False
    """Smoke path: task 0, 2 trials, 20 steps, 64 px, a tiny random world model."""


def _replay_factory(env, records_path: str, policy: str):
    recs = [r for r in read_records(records_path) if r["policy"] == policy and r["env"] == "real"]
    return ReplayPolicy.from_records(env, recs)


def main(argv: list[str] | None = None) -> int:
    args = tyro.cli(StudyArgs, args=argv)
    if args.tiny:
        args.tasks, args.trials, args.max_episode_steps, args.resolution = [0], 2, 20, 32
        if args.world_model is None and args.imagined:
            from wvla_gym.model.tiny import make_tiny_checkpoint

            args.world_model = str(Path(tempfile.mkdtemp()) / "tiny")
            make_tiny_checkpoint(args.world_model)
    from agents.registry import resolve_policy

    common = dict(suite="libero_object", tasks=args.tasks, trials=args.trials, out=args.out, resolution=args.resolution,
                  wrist=False, max_episode_steps=args.max_episode_steps, seed=0, placement=args.placement,
                  perturb_radius=args.perturb_radius)
    bad_sides = sorted(set(args.sides) - {"real", "imagined"})
    if bad_sides or not args.sides:
        raise ValueError(f"sides={args.sides!r}; expected a non-empty subset of ['real', 'imagined']")
    suffix = args.name_suffix
    if suffix is None:
        suffix = ("@sampled" if args.placement == "sampled" else "") + (
            f"@perturb{args.perturb_radius:g}" if args.perturb_radius else "")
    imagined_kwargs = {"imagine_from": args.imagine_from, **({"checkpoint": args.world_model} if args.world_model else {})}
    if args.action_guidance != 1.0:
        imagined_kwargs["action_guidance"] = args.action_guidance
    episodes = args.out / "episodes.jsonl"
    policies = []
    for noise in args.noise_levels:
        r = resolve_policy("scripted", noise_std=noise)
        policies.append((r.name, r.factory, True, r.knobs))
    unknown = sorted(set(args.baselines) - {"random", "zero"})
    if unknown:
        raise ValueError(f"baselines={args.baselines!r}; expected a subset of ['random', 'zero']")
    if "random" in args.baselines:
        policies.append(("random", lambda env: RandomPolicy(scale=1.0), False, {"scale": 1.0}))
    if "zero" in args.baselines:
        policies.append(("zero", lambda env: ZeroPolicy(), False, {}))
    for ckpt in args.worldvla:
        r = resolve_policy("worldvla", checkpoint=None if ckpt == "default" else ckpt)
        knobs = dict(r.knobs)
        if ckpt != "default":  # a retrained checkpoint at the same path is another run
            knobs["checkpoint_digest"] = path_digest(ckpt)
        policies.append((r.name, r.factory, False, knobs))
    kwargs_of = {}
    for item in args.policy_kwargs:
        name, sep, text = item.partition("=")
        try:
            kw = json.loads(text) if sep else None
        except json.JSONDecodeError as e:
            raise ValueError(f"--policy-kwargs {item!r}: {e}; expected NAME='{{...}}' (a JSON object)") from None
        if not isinstance(kw, dict):
            raise ValueError(f"--policy-kwargs {item!r}; expected NAME='{{...}}' (a JSON object)")
        kwargs_of[name] = kw
    names = []
    for item in args.policies:
        name, sep, spec = item.partition("=")
        if not (sep and name and spec):
            raise ValueError(f"--policies {item!r}; expected NAME=SPEC, e.g. knn_e30=knn:policies/knn_e30")
        names.append(name)
        r = resolve_policy(spec, policy_kwargs=kwargs_of.get(name))
        knobs = {**r.knobs, "spec": spec}
        if ":" in spec and Path(spec.split(":", 1)[1]).exists():  # a retrained folder at the same path is another run
            knobs["policy_digest"] = path_digest(spec.split(":", 1)[1])
        policies.append((name, r.factory, r.privileged, knobs))
    if sorted(set(kwargs_of) - set(names)):
        raise ValueError(f"--policy-kwargs names {sorted(set(kwargs_of) - set(names))} that are not in --policies")
    policies = [(name + suffix, *rest) for name, *rest in policies]
    from wvla_gym.runtime import DEFAULT_ASSET_DIR

    wm_digest = path_digest(args.world_model or DEFAULT_ASSET_DIR)
    for name, factory, privileged, knobs in policies:
        if "real" in args.sides:
            evaluate(factory, EvalConfig(env="real", policy_name=name, record_actions=True, knobs=knobs, **common))
        if not args.imagined or "imagined" not in args.sides:
            continue
        imag_factory = functools.partial(_replay_factory, records_path=str(episodes), policy=name) if privileged else factory
        evaluate(imag_factory, EvalConfig(env="imagined", policy_name=name, imagined_env_kwargs=imagined_kwargs,
                                          backend=args.imagined_backend, num_envs=args.num_envs, record_actions=True,
                                          knobs={**knobs, "world_model_digest": wm_digest,
                                                 **({"action_guidance": args.action_guidance}
                                                    if args.action_guidance != 1.0 else {})}, **common))
    report = agreement_from_records(read_records(episodes))
    if args.imagined:  # how much of each policy's action range the world model's bins can tell apart
        from wvla_gym.runtime import WorldVLARuntime

        cfg = WorldVLARuntime.from_pretrained(args.world_model).config
        report["clipped_action_share"] = clipped_action_share(read_records(episodes), cfg.action_min, cfg.action_max)
        for policy, c in report["clipped_action_share"].items():
            print(f"{policy}: {100 * c['share']:.1f} % of action values outside the world model's bins")
    (args.out / "agreement.json").write_text(json.dumps(report, indent=2) + "\n")
    table = format_table(report)
    (args.out / "agreement.md").write_text(table + "\n")
    print(table)
    if report["points"]:
        from wvla_gym.evaluation.plots import plot_scatter, plot_task_bars

        plot_scatter(report, args.out / "agreement_scatter.png")
        plot_task_bars(report, args.out / "agreement_tasks.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
