"""The ``wvla-gym`` command: dispatches to one subcommand module, imported only when used."""

from __future__ import annotations

import importlib
import sys

#: subcommand -> (module with ``main(argv) -> int``, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("wvla_gym.cli.demo", "the main demo: a LIBERO rollout (real and imagined) written to mp4"),
    "eval": ("wvla_gym.cli.eval", "run the LIBERO evaluation protocol (real, imagined or both), resumable"),
    "agreement": ("wvla_gym.cli.agreement", "imagined-vs-real agreement report (Pearson, Spearman, MMRV, kappa)"),
    "wm-eval": ("wvla_gym.cli.wm_eval", "open-loop world-model metrics (PSNR/SSIM per horizon)"),
    "record": ("wvla_gym.cli.record", "record scripted-expert demonstrations in LIBERO's HDF5 layout"),
    "data": ("wvla_gym.cli.data", "pack recorded demos into compact VQ-code files (what the repo commits) and back"),
    "train": ("wvla_gym.cli.train", "train the VQ tokenizer, the WorldVLA model or the success judge"),
    "serve": ("wvla_gym.cli.serve", "serve a WorldVLA agent over openpi's websocket policy protocol"),
}


def _usage() -> str:
    lines = ["usage: wvla-gym <command> [args...]", "", "commands:"]
    lines += [f"  {name:<10} {help_}" for name, (_, help_) in SUBCOMMANDS.items()]
    lines.append("\n`wvla-gym <command> --help` shows the command's options.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in SUBCOMMANDS:
        print(f"wvla-gym: unknown command {cmd!r}; expected one of {', '.join(SUBCOMMANDS)}\n", file=sys.stderr)
        print(_usage(), file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[cmd][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
