"""Success judges: metrics against hand-computed values, a classifier that learns a separable rule, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from wvla_gym.judge import (
    CallableJudge,
    ClassifierJudge,
    SuccessJudge,
    binary_metrics,
    score_many,
    train_classifier_judge,
)


def test_binary_metrics_hand_computed():
    #            tp  fp  tn  fn  tp  tn
    preds = [1, 1, 0, 0, 1, 0]
    labels = [1, 0, 0, 1, 1, 0]
    m = binary_metrics(preds, labels)
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (2, 1, 2, 1, 6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # chance agreement p_e = (3*3 + 3*3) / 36 = 0.5 -> kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert m["cohen_kappa"] == pytest.approx(1 / 3)


def test_binary_metrics_edge_cases():
    m = binary_metrics([0, 0, 0], [1, 0, 1])  # nothing predicted positive
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, pytest.approx(1 / 3))
    m = binary_metrics([1, 0, 1, 0], [1, 0, 1, 0])
    assert (m["precision"], m["recall"], m["cohen_kappa"]) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="same length"):
        binary_metrics([1, 0], [1])


def _squares(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Noisy frames with a bright square: top-left half -> success (1), bottom-right half -> failure (0)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 90, (n, size, size, 3), dtype=np.uint8)
    y = rng.integers(0, 2, n)
    for i in range(n):
        r, c = rng.integers(0, size // 2 - 6, 2) + (0 if y[i] else size // 2)
        x[i, r : r + 6, c : c + 6] = (230, 40, 40)
    return x, y


@pytest.fixture(scope="module")
def trained():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny CNN: one thread is fastest on a shared CPU
    x, y = _squares(192, seed=0)
    yield train_classifier_judge(x, y, epochs=25, batch_size=32, lr=1e-2, input_size=32, channels=(8, 16), seed=0)
    torch.set_num_threads(n)


def test_classifier_learns_a_separable_rule(trained):
    x, y = _squares(128, seed=1)  # held out
    m = trained.evaluate(x, y)
    assert m["accuracy"] >= 0.95 and m["precision"] >= 0.9 and m["recall"] >= 0.9, m
    # evaluate() is exactly binary_metrics on thresholded probabilities, recomputed here by hand
    p = trained.predict_proba(x) >= 0.5
    tp, fp, fn = int((p & (y == 1)).sum()), int((p & (y == 0)).sum()), int((~p & (y == 1)).sum())
    assert (m["tp"], m["fp"], m["fn"]) == (tp, fp, fn)
    assert m["precision"] == pytest.approx(tp / (tp + fp)) and m["recall"] == pytest.approx(tp / (tp + fn))
    # a threshold of 1.0 predicts nothing positive: recall 0
    assert trained.evaluate(x, y, threshold=1.0)["recall"] == 0.0


def test_classifier_probability_is_sigmoid_of_the_logit():
    """Zero conv weights make every feature 0, so the logit is the head's bias: p = sigmoid(b), by hand."""
    judge = ClassifierJudge(input_size=16, channels=(4,), threshold=0.5)
    with torch.no_grad():
        for p in judge.parameters():
            p.zero_()
        judge.net.head.bias.fill_(float(np.log(3.0)))  # sigmoid(log 3) = 3 / (1 + 3)
    frames = np.random.default_rng(0).integers(0, 256, (3, 20, 20, 3), dtype=np.uint8)
    np.testing.assert_allclose(judge.predict_proba(frames), [0.75, 0.75, 0.75], rtol=1e-6)
    assert judge.score(frames, "") == pytest.approx(0.75)
    with torch.no_grad():
        judge.net.head.bias.fill_(float(np.log(1 / 4)))  # sigmoid(log 1/4) = 1/5
    m = judge.evaluate(frames, [1, 0, 1], threshold=0.1)  # 0.2 >= 0.1: all positive -> tp 2, fp 1
    assert (m["tp"], m["fp"], m["fn"], m["tn"]) == (2, 1, 0, 0)
    assert (m["precision"], m["recall"], m["accuracy"]) == (pytest.approx(2 / 3), 1.0, pytest.approx(2 / 3))


def test_classifier_scores_the_last_frame_and_batches(trained):
    x, y = _squares(4, seed=2)
    pos, neg = x[y == 1][0], x[y == 0][0]
    assert isinstance(trained, SuccessJudge)
    assert trained.score(np.stack([neg, pos]), "any") > 0.5 > trained.score(np.stack([pos, neg]), "any")
    windows = [np.stack([neg, pos]), np.stack([pos, neg])]
    batched = score_many(trained, windows, ["a", "b"])
    one_by_one = [trained.score(w, "") for w in windows]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-6)
    # frames of any resolution are resized to the judge's input size
    big = np.kron(pos, np.ones((2, 2, 1), np.uint8))
    assert trained.score(big[None], "") > 0.5


def test_save_and_load_roundtrip(trained, tmp_path):
    trained.threshold = 0.7
    trained.save_pretrained(tmp_path / "judge")
    cfg = json.loads((tmp_path / "judge" / "judge_config.json").read_text())
    assert cfg == {"judge_type": "classifier", "input_size": 32, "channels": [8, 16], "threshold": 0.7}
    loaded = ClassifierJudge.from_pretrained(tmp_path / "judge")
    x, _ = _squares(8, seed=3)
    np.testing.assert_array_equal(loaded.predict_proba(x), trained.predict_proba(x))
    assert loaded.threshold == 0.7
    with pytest.raises(FileNotFoundError, match="judge_config.json"):
        ClassifierJudge.from_pretrained(tmp_path / "nope")


def test_training_is_seeded():
    x, y = _squares(32, seed=4)
    kw = dict(epochs=2, batch_size=16, input_size=16, channels=(4,), seed=5)
    a, b = train_classifier_judge(x, y, **kw), train_classifier_judge(x, y, **kw)
    np.testing.assert_array_equal(a.predict_proba(x), b.predict_proba(x))
    with pytest.raises(ValueError, match="0/1"):
        train_classifier_judge(x, y * 2, epochs=1)


def test_callable_judge_validates():
    j = CallableJudge(lambda f, i: f.mean() / 255.0, threshold=0.4, window=2)
    assert (j.threshold, j.window) == (0.4, 2)
    assert j.score(np.full((1, 4, 4, 3), 51, np.uint8), "x") == pytest.approx(0.2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        CallableJudge(lambda f, i: float("nan")).score(np.zeros((1, 4, 4, 3), np.uint8), "")
    with pytest.raises(ValueError, match="threshold"):
        CallableJudge(lambda f, i: 0.0, threshold=2.0)
    with pytest.raises(ValueError, match="window"):
        CallableJudge(lambda f, i: 0.0, window=0)
    assert score_many(None, [np.zeros((1, 2, 2, 3), np.uint8)], [""]) == [0.0]
