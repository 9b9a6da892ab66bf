"""Training (smoke runs, determinism, resuming, schedule, augmentation) and evaluation metrics."""

from __future__ import annotations

import io
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from saliency_jax.model import checkpoint as ck
from saliency_jax.model import data
from saliency_jax.model import evaluate as ev
from saliency_jax.model import train as tr

# A narrow model keeps every run to a few seconds; the loop is the same as for the real one.
TINY = dict(fc=(8,), width=0.25)


def _smoke(**kw):
    return tr.get_config("smoke", **{**TINY, **kw})


def _separable(n=16):
    """Class 0 dark images, class 1 bright ones: learnable in a handful of steps."""
    labels = (np.arange(n) % 2).astype(np.int32)
    rng = np.random.default_rng(0)
    base = np.where(labels[:, None, None, None] == 1, 200, 40)
    images = np.clip(base + rng.integers(-20, 21, (n, 128, 128, 3)), 0, 255).astype(np.uint8)
    return tr.Dataset(images, labels, images[:8], labels[:8], ("dark", "bright"), {"source": "test"})


def _digest(result):
    return ck.weights_digest(result.variables)


@pytest.mark.slow
def test_smoke_run_writes_metrics_and_changes_weights(tmp_path):
    stream = io.StringIO()
    result = tr.train(_smoke(epochs=2), tmp_path, progress=stream)
    lines = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2] and list(result.history) == lines
    assert [r["step"] for r in lines] == [2, 4]  # 16 images / batch 8
    for r in lines:
        assert set(r) >= {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "seconds"}
        assert math.isfinite(r["train_loss"]) and 0.0 <= r["val_accuracy"] <= 1.0
    init = result.module.init(jax.random.split(jax.random.key(0))[0], jnp.zeros((1, 128, 128, 3)))
    assert ck.weights_digest(init) != _digest(result)
    text = stream.getvalue()
    assert "epoch 1/2" in text and "epoch 2/2" in text and "loss" in text and "acc" in text
    # validation numbers agree with an independent forward pass over the val split
    val = data.generate(8, split="val", seed=0)
    logits = np.asarray(result.module.apply(result.variables, data.preprocess(val.images)))
    assert lines[-1]["val_accuracy"] == pytest.approx(float((logits.argmax(1) == val.labels).mean()))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert lines[-1]["val_loss"] == pytest.approx(float(-logp[np.arange(8), val.labels].mean()), rel=1e-4)


@pytest.mark.slow
def test_training_learns_a_separable_problem(tmp_path):
    result = tr.train(_smoke(epochs=8, learning_rate=3e-3), tmp_path, dataset=_separable(), progress=False)
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < first["train_loss"]
    assert last["val_accuracy"] == 1.0


@pytest.mark.slow
def test_same_seed_same_weights_and_resume_is_bit_exact(tmp_path):
    config = _smoke(epochs=2)
    straight = tr.train(config, tmp_path / "a", progress=False)
    again = tr.train(config, tmp_path / "b", progress=False)
    assert _digest(straight) == _digest(again)
    half = tr.train(config, tmp_path / "c", progress=False, stop_after_epoch=1)
    assert len(half.history) == 1 and _digest(half) != _digest(straight)
    resumed = tr.train(config, tmp_path / "c", progress=False)
    assert _digest(resumed) == _digest(straight)
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    # a finished run resumes to itself without training
    done = tr.train(config, tmp_path / "c", progress=False)
    assert _digest(done) == _digest(straight)
    other_seed = tr.train(_smoke(epochs=1, seed=1), tmp_path / "d", progress=False)
    assert _digest(other_seed) != _digest(half)


@pytest.mark.slow
def test_resume_refuses_another_config(tmp_path):
    tr.train(_smoke(epochs=1), tmp_path, progress=False)
    with pytest.raises(ValueError, match="different config"):
        tr.train(_smoke(epochs=1, learning_rate=1e-4), tmp_path, progress=False)
    fresh = tr.train(_smoke(epochs=1, learning_rate=1e-4), tmp_path, progress=False, resume=False)
    assert len(fresh.history) == 1


def test_schedule_is_warmup_then_cosine():
    config = tr.get_config("default", learning_rate=1e-3, warmup_steps=10, final_lr_fraction=0.1)
    sched = tr._schedule(config, 110)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.5e-3)
    assert float(sched(10)) == pytest.approx(1e-3)
    # cosine from step 10 to 110: halfway the rate is the mean of peak and end
    assert float(sched(60)) == pytest.approx((1e-3 + 1e-4) / 2, rel=1e-5)
    assert float(sched(110)) == pytest.approx(1e-4)


def test_augment_is_a_flip_and_a_gain_per_image():
    x = jnp.asarray(np.random.default_rng(0).uniform(0.1, 0.8, (32, 8, 8, 3)).astype(np.float32))
    y = np.asarray(tr._augment(jax.random.key(3), x))
    xn = np.asarray(x)
    flips = 0
    for i in range(32):
        hits = []
        for flipped in (False, True):
            src = xn[i, :, ::-1] if flipped else xn[i]
            g = y[i].sum() / src.sum()
            if np.allclose(y[i], np.clip(src * g, 0, 1), atol=1e-6):
                hits.append((flipped, g))
        assert hits, f"image {i} is neither a scaled copy nor a scaled mirror"
        flipped, g = hits[0]
        flips += flipped
        assert 0.8 - 1e-5 <= g <= 1.2 + 1e-5
    assert 4 < flips < 28  # about half are mirrored


def test_config_validation():
    with pytest.raises(ValueError, match="`name` \\(='big'\\)"):
        tr.get_config("big")
    with pytest.raises(TypeError, match="colour"):
        tr.get_config("smoke", colour=3)
    with pytest.raises(ValueError, match="`epochs` \\(=0\\)"):
        tr.get_config("smoke", epochs=0)
    with pytest.raises(ValueError, match="learning_rate"):
        tr.get_config("smoke", learning_rate=-1.0)
    with pytest.raises(TypeError, match="TrainConfig"):
        tr.train({"epochs": 1}, "/tmp/never")


@pytest.mark.slow
def test_train_on_an_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for k, cls in enumerate(("a", "b")):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (40 + i, 60, 3), dtype=np.uint8)).save(tmp_path / "data" / cls / f"{i}.png")
    result = tr.train(_smoke(epochs=1), tmp_path / "run", data_dir=tmp_path / "data", progress=False)
    assert result.classes == ("a", "b")
    assert result.data_info["source"] == "image-folder"
    assert result.data_info["train"]["n"] + result.data_info["val"]["n"] == 12
    assert result.module.num_classes == 2


def test_predict_logits_pads_the_last_batch_without_changing_results():
    from saliency_jax.model.architectures import get_model

    m = get_model("small", num_classes=2, **TINY)
    rng = np.random.default_rng(0)  # random weights in the model's tree (eval_shape: no slow eager init)
    abstract = jax.eval_shape(m.init, jax.random.key(0), jnp.zeros((1, 128, 128, 3)))
    v = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.05, a.shape).astype(a.dtype)), abstract)
    images = data.generate(5, split="test").images
    ref = np.asarray(m.apply(v, data.preprocess(images)))
    got = ev.predict_logits(m.apply, v, images, batch_size=2)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ evaluation


def _brute_auc(y, s):
    """Probability that a positive outscores a negative, ties counting one half."""
    pos, neg = s[y == 1], s[y == 0]
    total = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


def _brute_ap(y, s):
    """Mean over positives of the precision at that positive's rank (distinct scores)."""
    order = np.argsort(-s)
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if y[i] == 1:
            hits += 1
            total += hits / rank
    return total / y.sum()


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)  # rounding makes ties
    fpr, tpr, thr = ev.roc_curve(y, s)
    assert fpr[0] == 0 and tpr[0] == 0 and fpr[-1] == 1 and tpr[-1] == 1
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert ev.auc(fpr, tpr) == pytest.approx(_brute_auc(y, s), abs=1e-12)
    # every point is the rate of "score >= threshold", counted by hand
    for f, t, th in zip(fpr[1:], tpr[1:], thr[1:]):
        assert f == np.sum((s >= th) & (y == 0)) / np.sum(y == 0)
        assert t == np.sum((s >= th) & (y == 1)) / np.sum(y == 1)


def test_average_precision_matches_the_rank_definition():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 50)
    s = rng.normal(size=50) + y  # distinct scores
    assert ev.average_precision(y, s) == pytest.approx(_brute_ap(y, s), abs=1e-12)
    p, r, thr = ev.precision_recall_curve(y, s)
    for pi, ri, th in zip(p, r, thr):
        sel = s >= th
        assert pi == pytest.approx(np.sum(sel & (y == 1)) / np.sum(sel))
        assert ri == pytest.approx(np.sum(sel & (y == 1)) / np.sum(y == 1))
    # hand case: scores 0.9 (pos), 0.8 (neg), 0.7 (pos): AP = (1/1 + 2/3) / 2
    assert ev.average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7])) == pytest.approx(5 / 6)


def test_confusion_matrix_and_classification_metrics():
    labels = np.array([0, 0, 1, 1, 1, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 2]] * 3.0
    cm = ev.confusion_matrix(labels, logits.argmax(1), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 1], [0, 0, 1]])
    m = ev.classification_metrics(logits, labels, ["a", "b", "c"])
    assert m["correct"] == 4 and m["accuracy"] == pytest.approx(4 / 6)
    assert set(m["per_class"]) == {"a", "b", "c"}
    binary = ev.classification_metrics(np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]]), np.array([1, 0, 0]), ["n", "p"])
    assert binary["positive_class"] == "p" and set(binary["per_class"]) == {"p"}
    # positives' scores 0.73; negatives' 0.27 and 0.88 -> AUC 1/2
    assert binary["auc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="both classes"):
        ev.roc_curve(np.array([1, 1]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError, match="logits"):
        ev.classification_metrics(np.zeros((3, 2)), np.zeros(4, int), ["a", "b"])


def test_write_report_writes_json_and_readable_plots(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 40)
    logits = np.stack([np.zeros(40), labels + rng.normal(size=40)], 1)
    m = ev.classification_metrics(logits, labels, ["ring", "cross"])
    paths = ev.write_report(m, tmp_path / "rep", title="t")
    assert json.loads(paths["metrics"].read_text())["accuracy"] == m["accuracy"]
    for k in ("roc", "pr", "confusion"):
        with Image.open(paths[k]) as im:
            assert im.format == "PNG" and im.size[0] > 200
    assert sorted(p.name for p in (tmp_path / "rep").iterdir()) == ["confusion.png", "metrics.json", "pr.png", "roc.png"]


def test_curriculum_goes_from_easy_images_to_all():
    config = tr.get_config("smoke", num_train=40, epochs=4, curriculum_step=0.3, batch_size=4)
    ds = tr.load_data(config)
    levels = ds.train_clutter
    assert levels is not None and levels.shape == (40,)
    pools = tr._epoch_pools(config, ds)
    for e, pool in enumerate(pools):
        cap = min(1.0, 0.3 * (e + 1))
        assert pool.tolist() == [i for i in range(40) if levels[i] <= cap]
    assert pools[-1].tolist() == list(range(40))
    # validation images are at full clutter, training images at their own level
    np.testing.assert_array_equal(ds.val_images, data.generate(8, split="val", seed=0).images)
    no_curriculum = tr._epoch_pools(tr.get_config("smoke", num_train=40, epochs=2), ds)
    assert all(p.tolist() == list(range(40)) for p in no_curriculum)


def test_loss_and_accuracy_match_a_hand_computation():
    logits = np.array([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], np.float32)
    labels = np.array([0, 0, 1])
    expected = -(np.log(np.exp(2) / (np.exp(2) + 1)) + np.log(1 / (1 + np.exp(3))) + np.log(0.5)) / 3
    r = ev.loss_and_accuracy(logits, labels)
    assert r["loss"] == pytest.approx(expected, rel=1e-12) and r["accuracy"] == pytest.approx(1 / 3)
    # large logits do not overflow
    assert ev.loss_and_accuracy(np.array([[1000.0, 0.0]]), np.array([1]))["loss"] == pytest.approx(1000.0)
    empty = ev.loss_and_accuracy(np.zeros((0, 2)), np.zeros(0, int))
    assert math.isnan(empty["loss"]) and math.isnan(empty["accuracy"])


def _card(**data_fields):
    return {"data": {"source": "generated", "seed": 3, **data_fields}, "input_size": [64, 64, 3],
            "classes": ["ring", "cross"]}


def test_heldout_set_is_the_cards_generated_test_split():
    held = ev.heldout_set(_card(spurious_cue=0.5), 4, start=2)
    ref = data.generate(4, split="test", seed=3, start=2, size=64, spurious_cue=0.5)
    np.testing.assert_array_equal(held.images, ref.images)
    np.testing.assert_array_equal(held.labels, ref.labels)
    assert ev.heldout_description(held) == {"source": "generated", "split": "test", "seed": 3, "start": 2, "n": 4,
                                            "spurious_cue": 0.5}
    no_cue = ev.heldout_set(_card(spurious_cue=0.5), 4, start=2, spurious_cue=0.0)
    assert not no_cue.has_cue.any() and held.info["spurious_cue"] == 0.5
    with pytest.raises(ValueError, match="image-folder"):
        ev.heldout_set({"data": {"source": "image-folder"}, "input_size": [64, 64, 3], "classes": ["a", "b"]}, 4)
    with pytest.raises(ValueError, match="classes"):
        ev.heldout_set({**_card(), "classes": ["a", "b"]}, 4)
    with pytest.raises(ValueError, match="`n` \\(=0\\)"):
        ev.heldout_set(_card(), 0)


@pytest.mark.slow
def test_progress_goes_to_a_log_as_whole_lines(tmp_path):
    stream = io.StringIO()  # not a terminal: one line per draw, no carriage returns
    tr.train(_smoke(epochs=1, num_train=32), tmp_path, progress=stream)
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[0].startswith("epoch 1/1 [") and " 1/4 loss " in lines[0] and " it/s" in lines[0]
    assert lines[-2].startswith("epoch 1/1 [") and " 4/4 loss " in lines[-2]
    assert lines[-1].startswith("epoch 1/1 loss ") and "| val loss " in lines[-1]
