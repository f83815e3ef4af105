"""World-model frame metrics, the agreement report and its CLI (no simulator)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from wvla_gym.evaluation.agreement import agreement_from_records
from wvla_gym.evaluation.results import ResultsWriter
from wvla_gym.evaluation.world_model_metrics import (
    evaluate_open_loop,
    gaussian_window,
    psnr,
    require_feature_weights,
    ssim,
)


def test_psnr_hand_value():
    a = np.zeros((8, 8, 3), np.uint8)
    b = np.full((8, 8, 3), 10, np.uint8)
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 100))  # MSE = 100 -> 28.13 dB
    assert psnr(a, a) == 100.0  # identical images: the documented cap (wvla_gym.utils.images.PSNR_IDENTICAL_DB)


def test_ssim_constant_images_closed_form():
    # No variance: SSIM = (2ab + C1) / (a^2 + b^2 + C1) with C1 = (0.01 * 255)^2.
    a, b = 100.0, 120.0
    c1 = (0.01 * 255) ** 2
    x = np.full((16, 16, 3), a, np.uint8)
    y = np.full((16, 16, 3), b, np.uint8)
    assert ssim(x, y) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    assert ssim(x, x) == pytest.approx(1.0)


def test_ssim_matches_brute_force_windows():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (13, 14, 3)).astype(np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-40, 41, x.shape), 0, 255).astype(np.uint8)
    w = gaussian_window(11, 1.5)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    vals = []
    for c in range(3):
        for i in range(13 - 10):
            for j in range(14 - 10):
                px = x[i : i + 11, j : j + 11, c].astype(float)
                py = y[i : i + 11, j : j + 11, c].astype(float)
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cxy = (w * (px - mx) * (py - my)).sum()
                vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2)))
    assert ssim(x, y) == pytest.approx(float(np.mean(vals)), rel=1e-9)


def test_open_loop_per_horizon_with_a_stub_model():
    # Real episode: frame t is constant 10*t. The stub "world model" adds 10 per step, except it ignores the
    # action and adds 12, so the error grows by 2 per horizon step: |diff| = 2h -> PSNR = 20 log10(255 / 2h).
    frames = np.stack([np.full((12, 12, 3), 10 * t, np.uint8) for t in range(5)])
    actions = np.zeros((4, 7), np.float32)
    res = evaluate_open_loop([(frames, actions)], lambda f, a: (f.astype(int) + 12).astype(np.uint8), horizon=3,
                             every=4)
    assert res["horizon"] == [1, 2, 3] and res["n"] == [1, 1, 1]
    assert res["psnr"] == pytest.approx([20 * math.log10(255 / (2 * h)) for h in (1, 2, 3)])
    with pytest.raises(ValueError, match="T\\+1 frames"):
        evaluate_open_loop([(frames, actions[:2])], lambda f, a: f, horizon=1)


def test_feature_metrics_need_local_weights(tmp_path):
    with pytest.raises(ValueError, match="I3D TorchScript"):
        require_feature_weights("fvd", None)
    with pytest.raises(ValueError, match="does not exist.*LPIPS"):
        require_feature_weights("lpips", tmp_path / "nope.pth")


def _rec(policy, env, task, init, success, error=None):
    return {"policy": policy, "env": env, "suite": "libero_object", "task_id": task, "init_state_id": init, "seed": 0,
            "success": success, "steps": 5, "wall_time_s": 0.1, "error": error, "traceback": None}


def _table():
    # policy A: task 0 real 2/2, imagined 1/2; task 1 real 0/2, imagined 0/2
    # policy B: task 0 real 1/2, imagined 2/2; task 1 real 1/2, imagined 1/2 (+ one errored imagined episode)
    recs = []
    for init, (r, i) in enumerate([(True, True), (True, False)]):
        recs += [_rec("A", "real", 0, init, r), _rec("A", "imagined", 0, init, i)]
    for init in range(2):
        recs += [_rec("A", "real", 1, init, False), _rec("A", "imagined", 1, init, False)]
    for init, (r, i) in enumerate([(True, True), (False, True)]):
        recs += [_rec("B", "real", 0, init, r), _rec("B", "imagined", 0, init, i)]
    for init, (r, i) in enumerate([(False, True), (True, False)]):
        recs += [_rec("B", "real", 1, init, r), _rec("B", "imagined", 1, init, i)]
    recs.append(_rec("B", "imagined", 1, 2, False, error="RuntimeError: x"))
    return recs


def test_agreement_report_hand_table():
    rep = agreement_from_records(_table())
    pts = {(p["policy"], p["task_id"]): (p["imagined"], p["real"]) for p in rep["points"]}
    assert pts == {("A", 0): (0.5, 1.0), ("A", 1): (0.0, 0.0), ("B", 0): (1.0, 0.5), ("B", 1): (0.5, 0.5)}
    assert rep["errors_excluded"] == 1
    # imagined [0.5, 0, 1, 0.5] vs real [1, 0, 0.5, 0.5]: signed gap (-0.5 + 0 + 0.5 + 0) / 4 = 0
    assert rep["task_level"]["mean_signed_gap"] == pytest.approx(0.0)
    # MMRV by hand: i=A0 (real 1): flips with B0 (0.5 > 1? no vs 1 > 0.5) gap 0.5, with B1 (tie in imagined,
    # 1 > 0.5 real) gap 0.5 -> 0.5; A1: none -> 0; B0 (real .5): flips with A0 -> 0.5; B1 (real .5): vs A0
    # imagined tie, real .5 > 1 false: same -> 0, vs B0 imagined .5 > 1 no, real .5 > .5 no -> 0. Mean 1/4.
    assert rep["task_level"]["mmrv"] == pytest.approx(0.25)
    # policy level: A imagined 1/4 real 2/4; B imagined 3/4 (error dropped), real 2/4
    assert [(p["policy"], p["imagined"], p["real"]) for p in rep["policy_points"]] == [("A", 0.25, 0.5), ("B", 0.75, 0.5)]
    # episodes: 8 pairs; agree on A0/0, A1/0, A1/1, B0/0 -> 4/8. Marginals: imagined 4/8, real 4/8 -> kappa 0.
    ep = rep["episode_level"]
    assert ep["n_pairs"] == 8 and ep["paired_accuracy"] == pytest.approx(0.5)
    assert ep["cohen_kappa"] == pytest.approx(0.0)


def test_agreement_cli_writes_report_and_plots(tmp_path, capsys):
    from wvla_gym.cli.agreement import main

    with ResultsWriter(tmp_path / "run1" / "episodes.jsonl") as w:
        for r in _table():
            w.write(r)
    assert main([str(tmp_path)]) == 0
    report = json.loads((tmp_path / "agreement.json").read_text())
    assert report["task_level"]["mmrv"] == pytest.approx(0.25)
    for png in ("agreement_scatter.png", "agreement_tasks.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "MMRV" in capsys.readouterr().out
    assert main([str(tmp_path / "missing")]) == 2


def test_clipped_action_share_counts_values_outside_the_bins():
    from wvla_gym.evaluation.agreement import clipped_action_share

    def rec(policy, k, actions, env="imagined"):
        return {"policy": policy, "env": env, "suite": "libero_object", "task_id": 0, "init_state_id": k, "seed": 0,
                "success": False, "error": None, "actions": actions}

    lo, hi = [-0.5] * 7, [0.5] * 7
    recs = [rec("a", 0, [[0.0] * 7, [0.6] + [0.0] * 6]),          # 1 of 14 values outside
            rec("a", 1, [[-1.0] * 7]),                            # 7 of 7 outside
            rec("a", 0, [[9.0] * 7], env="real"),                 # real records are not what the world model saw
            rec("b", 0, [[0.5] * 7])]                             # the bin edges themselves are inside
    out = clipped_action_share(recs, lo, hi)
    assert out["a"]["values"] == 21 and out["a"]["share"] == 8 / 21
    assert out["a"]["per_dim"][0] == round(2 / 3, 4) and out["a"]["per_dim"][1] == round(1 / 3, 4)
    assert out["b"]["share"] == 0.0
