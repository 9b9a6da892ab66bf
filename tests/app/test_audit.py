"""The spurious-cue audit: its numbers against independent numpy computations, and ``--check``."""

from __future__ import annotations

import argparse
import itertools
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax import methods
from saliency_jax.app import audit as audit_lib
from saliency_jax.app import audit_cli, audit_stats
from saliency_jax.model import checkpoint, data


def _parse(argv):
    return audit_cli.add_arguments(argparse.ArgumentParser()).parse_args(argv)


# ---------------------------------------------------------------- independent references


def _auc_pairs(y, s):
    """ROC-AUC by counting every (positive, negative) pair, ties 1/2."""
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def _energy_ref(m, mask):
    m = np.abs(m).max(-1) if m.ndim == 3 else m
    pos = np.maximum(m, 0.0)
    return float(pos[mask].sum() / pos.sum()) if pos.sum() > 0 else None  # no positive mass: undefined (null)


def _pointing_ref(m, mask, tol):
    m = np.abs(m).max(-1) if m.ndim == 3 else m
    r, c = np.unravel_index(int(np.argmax(m)), m.shape)
    rows, cols = np.nonzero(mask)
    return float(any((i - r) ** 2 + (j - c) ** 2 <= tol * tol for i, j in zip(rows, cols)))


def _logits(model, images):
    return np.asarray(model.apply_fn(model.params, jnp.asarray(data.preprocess(images))), np.float64)


# ---------------------------------------------------------------- small pieces, by hand


def test_compare_by_hand():
    r = audit_stats.compare(np.array([0.3, 0.1, np.nan, 0.2]), np.array([0.1, 0.1, 0.5, 0.0]), n_boot=200)
    # the NaN pair is dropped; means 0.2 and 0.2/3; per-image ratios over positive clean values: 3 and 1
    assert r["n"] == 3
    assert r["cue_mean"] == pytest.approx(0.2) and r["clean_mean"] == pytest.approx(0.2 / 3)
    assert r["ratio"] == pytest.approx(3.0)
    assert r["per_image_ratio"] == pytest.approx({"n": 2, "q25": 1.5, "median": 2.0, "q75": 2.5})
    assert r["cue_higher"] == pytest.approx(2 / 3)
    lo, hi = r["ratio_ci"]
    assert lo <= 3.0 <= hi
    empty = audit_stats.compare(np.array([np.nan]), np.array([1.0]))
    assert empty["n"] == 0 and math.isnan(empty["ratio"])


def test_margin_and_cue_effect_by_hand():
    with_cue = np.array([[0.0, 3.0], [1.0, 2.0], [2.0, 0.0], [0.0, 1.0]])
    without = np.array([[1.0, 0.0], [1.0, 2.0], [2.0, 0.0], [3.0, 0.0]])
    e = audit_stats.cue_effect(with_cue, without, np.array([True, True, False, True]), np.array([0, 1, 0, 0]), 1)
    # margins with: 3, 1, -2, 1; without: -1, 1, -2, -3 -> changes 4, 0, (0), 4 over the marked images
    assert e["n"] == 3 and e["mean_margin_change"] == pytest.approx(8 / 3)
    assert e["n_other_class"] == 2 and e["mean_margin_change_other_class"] == pytest.approx(4.0)
    assert e["flipped_to_cue_class"] == 1.0  # both marked rings go from ring to cross


def _fake(ratio, lo, n_images=5):
    energy = {"ratio": ratio, "ratio_ci": [lo, ratio + 1]}
    return {"maps": {"n_images": n_images, "methods": {m: {"cue": {"energy": energy}} for m in ("occlusion", "guided")}}}


def test_check_by_hand():
    assert audit_stats.check(_fake(3.0, 1.5))["passed"]
    assert audit_stats.check(_fake(2.0, 1.01), min_ratio=2.0)["passed"]
    low_ci = audit_stats.check(_fake(3.0, 0.9))
    assert not low_ci["passed"] and "occlusion" in low_ci["reasons"][0]
    assert not audit_stats.check(_fake(1.9, 1.2))["passed"]
    both = audit_stats.check(_fake(1.0, 0.8), methods=("occlusion", "guided"))
    assert len(both["reasons"]) == 2
    none = audit_stats.check(_fake(3.0, 1.5, n_images=0))
    assert not none["passed"] and "no audited image carries the cue" in none["reasons"][0]


def test_audit_arguments_are_checked_before_any_work():
    with pytest.raises(ValueError, match="`n` \\(=1\\)"):
        audit_lib.audit(n=1)
    with pytest.raises(ValueError, match="methods.*'sobel'"):
        audit_lib.audit(methods="occlusion,sobel")
    with pytest.raises(ValueError, match="check_methods.*guided"):
        audit_lib.audit(methods="occlusion", check_methods="guided")
    with pytest.raises(ValueError, match="`stride` \\(=8\\) must not exceed `window` \\(=4\\)"):
        audit_lib.audit(window=4, stride=8)
    with pytest.raises(ValueError, match="spurious_cue"):
        audit_lib.audit(spurious_cue=2.0)
    with pytest.raises(ValueError, match="tolerance"):
        audit_lib.audit(tolerance=-1)
    a = _parse(["--n", "8", "--methods", "occlusion", "--check"])
    assert (a.n, a.methods, a.check, a.cue_model, a.clean_model, a.func) == (
        8, "occlusion", True, audit_lib.CUE_MODEL, None, audit_cli.cmd)
    # the methods are the registry's: the default is a selection of them, any registered one is accepted
    assert set(audit_lib.DEFAULT_METHODS) <= set(methods.names())
    assert _parse([]).methods == ",".join(audit_lib.DEFAULT_METHODS)
    with pytest.raises(ValueError, match=r"`methods`.*'sobel'.*" + ".*".join(methods.names())):
        audit_lib.audit(methods="sobel")


def test_the_cue_checkpoint_is_found_by_name():
    card = checkpoint.read_card(checkpoint.resolve(audit_lib.CUE_MODEL))
    assert card["data"]["spurious_cue"] > 0 and card["data"]["cue_class"] == 1
    assert "--spurious-cue" in card["training"]["command"]


# ---------------------------------------------------------------- the audit end to end


@pytest.mark.slow
def test_audit_on_a_tiny_n_equals_independent_computations(tmp_path):
    n, win, tol = 8, 64, 15
    r = audit_lib.audit(n=n, n_maps=3, out=tmp_path, methods="occlusion,deconvnet", window=win, stride=32,
                        tolerance=tol, panels=2, n_boot=50, batch_size=3)
    cue, clean = checkpoint.load(audit_lib.CUE_MODEL), checkpoint.load()
    p, seed = cue.card["data"]["spurious_cue"], cue.card["data"]["seed"]
    biased = data.generate(n, split="test", seed=seed, spurious_cue=p, cue_split="biased")
    marked = data.generate(n, split="test", seed=seed, spurious_cue=p, cue_split="clean")
    assert r["settings"]["spurious_cue"] == p
    # classifier metrics: AUC of softmax(cross) by counting pairs
    for who, model in (("cue", cue), ("clean", clean)):
        for split, g in (("biased", biased), ("clean", marked)):
            z = _logits(model, g.images)
            prob = np.exp(z[:, 1]) / np.exp(z).sum(1)
            assert r["classifier"][who][split]["auc"] == pytest.approx(_auc_pairs(g.labels, prob), abs=1e-9)
            assert r["classifier"][who][split]["accuracy"] == pytest.approx((z.argmax(1) == g.labels).mean())
    # map metrics on the first 3 marked images, cue-class logit
    sel = np.flatnonzero(marked.has_cue)[:3]
    assert r["maps"]["indices"] == sel.tolist()
    x = jnp.asarray(data.preprocess(marked.images[sel]))
    for who, model in (("cue", cue), ("clean", clean)):
        maps = {"occlusion": np.asarray(sj.occlusion(model.apply_fn, model.params, x, window=win, stride=32, target=1)),
                "deconvnet": np.asarray(sj.deconvnet(model.apply_fn, model.params, x, target=1))}
        for method, m in maps.items():
            got = r["maps"]["per_image"][method][who]
            for k in range(sel.size):
                cue_mask, obj = marked.cue_masks[sel[k]], marked.masks[sel[k]]
                for name, mask in (("cue", cue_mask), ("object", obj)):
                    ref = _energy_ref(m[k], mask)
                    assert got[name]["energy"][k] == (None if ref is None else pytest.approx(ref, rel=1e-4, abs=1e-6))
                assert got["cue"]["pointing"][k] == _pointing_ref(m[k], cue_mask, tol)
                assert got["object"]["pointing_strict"][k] == _pointing_ref(m[k], obj, 0)
    assert sum(v is not None for v in r["maps"]["per_image"]["occlusion"]["cue"]["cue"]["energy"]) >= 2
    # the ratio is the ratio of the two models' means (over the images where both are defined)
    e = r["maps"]["methods"]["occlusion"]["cue"]["energy"]
    cue_vals = np.array(r["maps"]["per_image"]["occlusion"]["cue"]["cue"]["energy"], dtype=float)
    clean_vals = np.array(r["maps"]["per_image"]["occlusion"]["clean"]["cue"]["energy"], dtype=float)
    both = ~np.isnan(cue_vals) & ~np.isnan(clean_vals)
    assert e["n"] == both.sum() and e["ratio"] == pytest.approx(cue_vals[both].mean() / clean_vals[both].mean())
    # the deconvnet experiment: rings without the mark, the cue class's deconvnet map added
    none = data.generate(n, split="test", seed=seed)
    rings = none.images[none.labels == 0][:3]
    for who, model in (("cue", cue), ("clean", clean)):
        xr = data.preprocess(rings)
        d = np.asarray(sj.deconvnet(model.apply_fn, model.params, jnp.asarray(xr), target=1), np.float64)
        d /= np.abs(d).reshape(len(d), -1).max(1)[:, None, None, None]
        before = _logits(model, rings)
        after = np.asarray(model.apply_fn(model.params, jnp.asarray(np.clip(xr + 0.25 * d, -1, 1), jnp.float32)))
        change = (after[:, 1] - after[:, 0]) - (before[:, 1] - before[:, 0])
        got = r["deconvnet_experiment"]["models"][who]["margin_change_signal"]
        assert got == pytest.approx(change.mean(), rel=1e-4, abs=1e-4)
    # the files: JSON equal to the result (NaN as null), markdown, figures
    written = json.loads((tmp_path / "audit.json").read_text())
    assert written["classifier"]["cue"]["biased"]["auc"] == r["classifier"]["cue"]["biased"]["auc"]
    assert written["files"]["panels"] == ["audit_panel_0.png", "audit_panel_1.png"]
    for name in ("audit.md", "audit_roc.png", "audit_cue_share.png", "audit_panel_0.png", "audit_panel_1.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "## Classifier metrics" in (tmp_path / "audit.md").read_text()
    assert not list(tmp_path.glob("*.tmp*")) and not (tmp_path / ".saliency-jax.lock").exists()


@pytest.mark.slow
def test_check_fails_when_the_cue_is_absent_or_not_found(tmp_path, capsys):
    # deconvnet maps only (its compilation is shared with the deconvnet experiment): a cheap check
    common = ["--cue-model", checkpoint.DEFAULT_NAME, "--n", "6", "--n-maps", "2", "--methods", "deconvnet",
              "--check-methods", "deconvnet", "--panels", "0", "--no-progress"]
    # absent: no image carries the mark
    absent = common + ["--spurious-cue", "0", "--out", str(tmp_path / "absent")]
    assert audit_cli.cmd(_parse(absent + ["--check"])) == 1
    assert "no audited image carries the cue" in capsys.readouterr().out
    assert audit_cli.cmd(_parse(absent)) == 0  # without --check the audit only reports
    # not found: the "cue model" is the clean model itself, so its maps equal the reference's
    same = common + ["--spurious-cue", "0.5", "--out", str(tmp_path / "same"), "--check"]
    assert audit_cli.cmd(_parse(same)) == 1
    out = capsys.readouterr().out
    assert "check: FAILED" in out and "deconvnet: the cue model's share of positive mass on the cue is 1x" in out
    written = json.loads((tmp_path / "same" / "audit.json").read_text())
    assert written["check"]["passed"] is False
    assert written["maps"]["methods"]["deconvnet"]["cue"]["energy"]["ratio"] == pytest.approx(1.0)


def test_deconvnet_transfer_pads_the_last_batch_and_keeps_every_image_its_own():
    # 5 images in batches of 3: the model never sees a short batch of 2 (the last batch is padded
    # to 3: one compilation), and each image's margins equal those of the image run alone. (The
    # backward pass calls the model on one example at a time inside vmap: batches of 1 appear.)
    w = np.random.default_rng(0).normal(size=(4 * 4 * 3, 2)).astype(np.float32)
    shapes = []

    def apply_fn(params, x):
        shapes.append(tuple(x.shape))
        return jax.nn.relu(x.reshape(x.shape[0], -1)) @ params

    model = checkpoint.LoadedModel(module=None, params=jnp.asarray(w), apply_fn=apply_fn,
                                   card={"classes": ["a", "b"], "input_size": [4, 4, 3]}, path=None)
    images = np.random.default_rng(1).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    got = audit_lib.deconvnet_transfer(model, images, 1, epsilon=0.25, batch_size=3)
    assert {s[0] for s in shapes} == {1, 3}
    for k in range(5):
        shapes.clear()
        alone = audit_lib.deconvnet_transfer(model, images[k:k + 1], 1, epsilon=0.25, batch_size=1)
        for key in ("margin_before", "margin_signal", "p_before", "p_signal"):
            assert got[key][k] == pytest.approx(alone[key][0], rel=1e-5, abs=1e-6), (key, k)
