"""The generated dataset (determinism, exact masks, spurious cue) and image-folder reading."""

from __future__ import annotations

import io
import math
import warnings

import numpy as np
import pytest
from PIL import Image, ImageOps

from saliency_jax.model import data, generated


# ---------------------------------------------------------------- independent shape references


def _ref_target_mask(kind: str, size: int, center, radius: float, angle: float) -> np.ndarray:
    """Pixel-by-pixel, from the documented geometry: ring = annulus r in [0.6, 1];
    cross = two bars of half-width 0.28 and half-length 1, in the object's rotated frame."""
    out = np.zeros((size, size), bool)
    c, s = math.cos(angle), math.sin(angle)
    for row in range(size):
        for col in range(size):
            dy, dx = row + 0.5 - center[0], col + 0.5 - center[1]
            u = (c * dx + s * dy) / radius
            v = (-s * dx + c * dy) / radius
            if kind == "ring":
                out[row, col] = 0.6 <= math.hypot(u, v) <= 1.0
            else:
                out[row, col] = (abs(u) <= 0.28 and abs(v) <= 1.0) or (abs(v) <= 0.28 and abs(u) <= 1.0)
    return out


def test_generate_is_deterministic_and_index_addressable():
    a = data.generate(6, split="train", seed=3)
    b = data.generate(6, split="train", seed=3)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    tail = data.generate(2, split="train", seed=3, start=4)
    np.testing.assert_array_equal(tail.images, a.images[4:])
    np.testing.assert_array_equal(tail.masks, a.masks[4:])
    other_seed = data.generate(6, split="train", seed=4)
    other_split = data.generate(6, split="test", seed=3)
    assert not np.array_equal(other_seed.images, a.images)
    assert not np.array_equal(other_split.images, a.images)
    assert a.images.dtype == np.uint8 and a.images.shape == (6, 128, 128, 3)
    assert a.labels.tolist() == [0, 1, 0, 1, 0, 1]


@pytest.mark.parametrize("index", [0, 1, 2, 3, 7])
def test_mask_is_exactly_the_target_geometry(index):
    ex = data.generate_example(index, split="val", seed=11)
    t = ex.target
    assert t.kind == data.TARGET_KINDS[ex.label] == ("ring", "cross")[index % 2]
    ref = _ref_target_mask(t.kind, 128, t.center, t.radius, t.angle)
    np.testing.assert_array_equal(ex.mask, ref)
    assert ex.mask.sum() > 50
    assert all(d.kind in data.DISTRACTOR_KINDS for d in ex.distractors)
    assert len(ex.distractors) >= 1


@pytest.mark.parametrize("index", [0, 5, 12])
def test_mask_covers_exactly_the_pixels_the_target_paints(index):
    # Float rendering before quantisation: the scene with and without its target differs
    # exactly on the mask (nothing else moves, every mask pixel changes). Private names on
    # purpose: only the float image can show that *every* mask pixel changes (after rounding to
    # uint8 a pixel may by chance keep its value), and no public function returns it.
    rng, cue = generated._example_rngs(2, "test", index)
    with_t, mask, _, _, _ = generated._render(rng, cue, index % 2, 128, False, draw_target=True)
    rng, cue = generated._example_rngs(2, "test", index)
    without, mask2, _, _, _ = generated._render(rng, cue, index % 2, 128, False, draw_target=False)
    np.testing.assert_array_equal(mask, mask2)
    changed = np.any(with_t != without, axis=-1)
    np.testing.assert_array_equal(changed, mask)
    # The public, quantised images agree outside the mask.
    a = data.generate_example(index, split="test", seed=2)
    b = data.generate_example(index, split="test", seed=2, draw_target=False)
    np.testing.assert_array_equal(a.image[~a.mask], b.image[~a.mask])


def test_distractors_never_touch_the_target():
    for i in range(20):
        ex = data.generate_example(i, split="train", seed=5)
        for d in ex.distractors:
            dmask = data.shape_mask(d.kind, 128, d.center, d.radius, d.angle)
            assert not (dmask & ex.mask).any()


def test_no_global_colour_statistic_separates_the_classes():
    # Nearest-centroid on 4x4x4 colour histograms, fitted on 300 images, scored on 200 others:
    # a colour statistic that solved the task would score far above chance here.
    def hist(images):
        q = (images // 64).reshape(len(images), -1, 3).astype(np.int64)
        idx = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
        return np.stack([np.bincount(r, minlength=64) for r in idx]).astype(np.float64) / idx.shape[1]

    tr = data.generate(300, split="train", seed=0)
    te = data.generate(200, split="test", seed=0)
    h_tr, h_te = hist(tr.images), hist(te.images)
    centroids = np.stack([h_tr[tr.labels == k].mean(0) for k in (0, 1)])
    dist = ((h_te[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    acc = (dist.argmin(1) == te.labels).mean()
    assert acc < 0.65, acc


def test_spurious_cue_follows_the_label_in_train_only():
    n = 200
    tr = data.generate(n, split="train", seed=1, spurious_cue=1.0)
    np.testing.assert_array_equal(tr.has_cue, tr.labels == 1)
    half = data.generate(n, split="train", seed=1, spurious_cue=0.5)
    assert not half.has_cue[half.labels == 0].any()
    assert 0.3 < half.has_cue[half.labels == 1].mean() < 0.7
    te = data.generate(n, split="test", seed=1, spurious_cue=1.0)
    rates = [te.has_cue[te.labels == k].mean() for k in (0, 1)]
    # independent of the label: about one half in each class (binomial sd ~ 0.05)
    assert all(0.35 < r < 0.65 for r in rates), rates
    # the mark is a 7x7 square, away from the target, and the rest of the image is unchanged
    clean = data.generate(n, split="test", seed=1)
    assert not clean.has_cue.any()
    for k in np.nonzero(te.has_cue)[0][:10]:
        rows, cols = np.nonzero(te.cue_masks[k])
        assert te.cue_masks[k].sum() == 49 and np.ptp(rows) == 6 and np.ptp(cols) == 6
        assert not (te.cue_masks[k] & te.masks[k]).any()
        np.testing.assert_array_equal(te.images[k][~te.cue_masks[k]], clean.images[k][~te.cue_masks[k]])


def _cue_draw(seed: int, split: str, index: int) -> float:
    """The documented cue draw ``u``, recomputed: the second child of
    ``SeedSequence([seed, split id, index])``, its first uniform."""
    child = np.random.SeedSequence([seed, {"train": 0, "val": 1, "test": 2}[split], index]).spawn(2)[1]
    return float(np.random.default_rng(child).uniform())


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_biased_and_clean_test_splits_follow_the_documented_rule(p):
    n = 40
    u = np.array([_cue_draw(5, "test", k) for k in range(n)])
    labels = np.arange(n) % 2
    biased = data.generate(n, split="test", seed=5, spurious_cue=p, cue_split="biased")
    clean = data.generate(n, split="test", seed=5, spurious_cue=p, cue_split="clean")
    # hand check of the rule: biased = "cross and u < p", clean = "u < 0.5" whatever p
    np.testing.assert_array_equal(biased.has_cue, (labels == 1) & (u < p))
    np.testing.assert_array_equal(clean.has_cue, u < 0.5)
    assert biased.info["cue_split"] == "biased" and clean.info["cue_split"] == "clean"
    # the test split's default is the clean one (unchanged behaviour)
    default = data.generate(n, split="test", seed=5, spurious_cue=p)
    np.testing.assert_array_equal(default.images, clean.images)
    assert default.info["cue_split"] == "clean"
    # the rest of each image is the same with or without the cue, and a mark present in both
    # variants is at the same place
    none = data.generate(n, split="test", seed=5)
    for k in range(n):
        outside = ~(biased.cue_masks[k] | clean.cue_masks[k])
        np.testing.assert_array_equal(biased.images[k][outside], none.images[k][outside])
        np.testing.assert_array_equal(clean.images[k][outside], none.images[k][outside])
        np.testing.assert_array_equal(biased.labels, clean.labels)
        if biased.has_cue[k] and clean.has_cue[k]:
            np.testing.assert_array_equal(biased.cue_masks[k], clean.cue_masks[k])
            np.testing.assert_array_equal(biased.images[k], clean.images[k])
        if biased.has_cue[k]:
            assert biased.cue_masks[k].sum() == 49 and (biased.images[k][biased.cue_masks[k]] != none.images[k][biased.cue_masks[k]]).any()


def test_biased_test_split_is_placed_as_training_is():
    # a biased test split is the training rule applied to the test stream: the train split's
    # default placement equals its explicit "biased" one, and "clean" can be asked of it too
    tr = data.generate(12, split="train", seed=2, spurious_cue=0.5)
    tr_b = data.generate(12, split="train", seed=2, spurious_cue=0.5, cue_split="biased")
    np.testing.assert_array_equal(tr.images, tr_b.images)
    u = np.array([_cue_draw(2, "train", k) for k in range(12)])
    tr_c = data.generate(12, split="train", seed=2, spurious_cue=0.5, cue_split="clean")
    np.testing.assert_array_equal(tr_c.has_cue, u < 0.5)
    one = data.generate_example(3, split="test", seed=2, spurious_cue=1.0, cue_split="biased")
    assert one.cue_mask.sum() == 49  # index 3 is a cross: p = 1 puts the mark on it
    assert data.resolve_cue_split("val") == "clean"


def test_cue_split_is_validated():
    with pytest.raises(ValueError, match="cue_split.*'skewed'"):
        data.generate(2, split="test", spurious_cue=0.5, cue_split="skewed")
    with pytest.raises(ValueError, match="cue_split"):
        data.generate_example(0, split="test", cue_split=1)
    with pytest.raises(ValueError, match="split.*'dev'"):
        data.resolve_cue_split("dev", "biased")


def test_generate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="split.*'bogus'"):
        data.generate(2, split="bogus")
    with pytest.raises(ValueError, match="`n` \\(=0\\)"):
        data.generate(0)
    with pytest.raises(ValueError, match="spurious_cue"):
        data.generate(2, spurious_cue=1.5)
    with pytest.raises(TypeError, match="`seed`"):
        data.generate(2, seed=1.5)


def test_shape_mask_small_hand_case():
    # radius 1 px disc centred on a pixel corner covers exactly the 4 adjacent pixel centres
    m = data.shape_mask("disc", 4, (2.0, 2.0), 1.0, 0.0)
    expected = np.zeros((4, 4), bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(m, expected)


# ---------------------------------------------------------------- preprocessing and image folders


def test_preprocess_and_to_model_input_map_0_255_to_minus_one_one():
    img = np.arange(128 * 128 * 3, dtype=np.int64).reshape(128, 128, 3) % 256
    img = img.astype(np.uint8)
    x = data.to_model_input(img)
    assert x.dtype == np.float32 and x.shape == (128, 128, 3)
    # the card's recipe, in float64: (x / 255 - 0.5) / 0.5 = x / 127.5 - 1
    np.testing.assert_allclose(x, img.astype(np.float64) / 127.5 - 1.0, rtol=0, atol=1e-6)
    assert x.min() == -1.0 and x.max() == 1.0
    assert data.PREPROCESSING["mean"] == [0.5] * 3 and data.PREPROCESSING["std"] == [0.5] * 3
    np.testing.assert_array_equal(data.preprocess(img[None]), x[None])
    with pytest.raises(TypeError, match="uint8"):
        data.preprocess(img.astype(np.float32))
    with pytest.raises(ValueError, match="input_size"):
        data.to_model_input(img, input_size=(0, 5))


def test_load_image_handles_modes(tmp_path):
    # 16-bit grayscale: 65535 -> 255, 0 -> 0, 32896 (=128.5*256) -> 128
    arr16 = np.array([[0, 65535], [32896, 65535]], np.uint16)
    Image.fromarray(arr16).save(tmp_path / "g16.png")
    im16 = Image.open(tmp_path / "g16.png")
    assert im16.mode.startswith("I")
    out = data.load_image(tmp_path / "g16.png")
    np.testing.assert_array_equal(out[..., 0], [[0, 255], [128, 255]])
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    # RGBA: alpha composited over black
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (200, 100, 50, 255)
    rgba[0, 1] = (200, 100, 50, 0)
    rgba[1, 0] = (200, 100, 50, 128)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = data.load_image(tmp_path / "a.png")
    np.testing.assert_array_equal(out[0, 0], (200, 100, 50))
    np.testing.assert_array_equal(out[0, 1], (0, 0, 0))
    np.testing.assert_allclose(out[1, 0], np.round(np.array([200, 100, 50]) * 128 / 255), atol=1)
    # palette
    pal = Image.fromarray(np.array([[0, 1]], np.uint8), "P")
    pal.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    pal.save(tmp_path / "p.png")
    np.testing.assert_array_equal(data.load_image(tmp_path / "p.png"), [[[10, 20, 30], [40, 50, 60]]])
    # EXIF orientation 6 (rotate 90° clockwise for display): a 2-row x 4-col red-left image
    # becomes 4 rows x 2 cols with the red part on top
    base = np.zeros((20, 40, 3), np.uint8)
    base[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(base).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    out = data.load_image(tmp_path / "r.jpg")
    assert out.shape == (40, 20, 3)
    assert out[:20, :, 0].mean() > 200 and out[20:, :, 0].mean() < 50


def _make_folder(root, n_per_class=5):
    rng = np.random.default_rng(0)
    modes = ["RGB", "L", "RGBA", "P"]
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True)
        for i in range(n_per_class):
            h, w = int(rng.integers(20, 300)), int(rng.integers(20, 300))
            im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(modes[i % 4])
            im.save(root / cls / f"img{i}.png")
    (root / "cats" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    buf = io.BytesIO()
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(buf, format="PNG")
    (root / "dogs" / "truncated.png").write_bytes(buf.getvalue()[:40])
    (root / "dogs" / "notes.txt").write_text("not an image")


def test_load_resized_is_the_file_resized_bilinearly_and_feeds_to_model_input(tmp_path):
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (37, 90, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "x.png")
    image, original = data.load_resized(tmp_path / "x.png", (64, 48))
    assert original == (37, 90) and image.dtype == np.uint8 and image.shape == (64, 48, 3)
    # reference: PIL's own bilinear resize of the decoded file
    ref = np.asarray(Image.open(tmp_path / "x.png").convert("RGB").resize((48, 64), Image.BILINEAR))
    np.testing.assert_array_equal(image, ref)
    # a path through to_model_input is the same pixels, scaled to [-1, 1]
    np.testing.assert_allclose(data.to_model_input(tmp_path / "x.png", (64, 48)), ref / 127.5 - 1.0, atol=1e-6)
    # already at the input size: the pixels unchanged
    same, original = data.load_resized(tmp_path / "x.png", (37, 90))
    np.testing.assert_array_equal(same, arr)
    with pytest.raises(TypeError, match="input_size"):
        data.load_resized(tmp_path / "x.png", (64,))


def test_load_image_turns_every_decoding_failure_into_a_value_error(tmp_path, monkeypatch):
    noise = np.random.default_rng(0).integers(0, 256, (10, 10, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "ok.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        data.load_resized(tmp_path / "nope.png")
    whole = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        data.load_resized(tmp_path / "cut.png")
    with monkeypatch.context() as m:  # PIL refuses images over twice MAX_IMAGE_PIXELS
        m.setattr(Image, "MAX_IMAGE_PIXELS", 10)
        with pytest.raises(ValueError, match="ok.png.*too large"):
            data.load_image(tmp_path / "ok.png")
    import struct

    def damaged(im):
        raise struct.error("unpack requires a buffer of 4 bytes")

    monkeypatch.setattr(ImageOps, "exif_transpose", damaged)  # PIL's own, used by every decode
    with pytest.raises(ValueError, match="ok.png.*error: unpack"):
        data.load_image(tmp_path / "ok.png")


def test_load_image_folder_reads_splits_and_skips(tmp_path):
    _make_folder(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        d = data.load_image_folder(tmp_path, val_fraction=0.4, seed=7)
        again = data.load_image_folder(tmp_path, val_fraction=0.4, seed=7)
        others = [data.load_image_folder(tmp_path, val_fraction=0.4, seed=s).val_paths for s in range(8, 12)]
    skipped = sorted(p for p, _ in d.skipped)
    assert skipped == sorted([str(tmp_path / "cats" / "broken.png"), str(tmp_path / "dogs" / "truncated.png")])
    assert sum("broken.png" in str(w.message) for w in caught) == 6  # once per call
    assert d.classes == ("cats", "dogs")
    assert d.train_images.shape == (6, 128, 128, 3) and d.train_images.dtype == np.uint8
    assert d.val_images.shape == (4, 128, 128, 3)
    assert sorted(d.val_labels.tolist()) == [0, 0, 1, 1]
    assert not set(d.train_paths) & set(d.val_paths)
    assert len(set(d.train_paths) | set(d.val_paths)) == 10
    # each stored image is the file, converted to RGB and resized bilinearly
    p = d.val_paths[0]
    ref = np.asarray(Image.open(p).convert("RGBA" if Image.open(p).mode in ("RGBA", "P") else "RGB"))
    if ref.shape[-1] == 4:
        ref = np.round(ref[..., :3] * (ref[..., 3:] / 255.0)).astype(np.uint8)
    ref = np.asarray(Image.fromarray(ref).resize((128, 128), Image.BILINEAR))
    np.testing.assert_array_equal(d.val_images[0], ref)
    # deterministic; another seed gives another split
    assert again.val_paths == d.val_paths
    np.testing.assert_array_equal(again.train_images, d.train_images)
    assert any(o != d.val_paths for o in others)


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        data.load_image_folder(tmp_path / "missing")
    (tmp_path / "only").mkdir()
    with pytest.raises(ValueError, match="at least two"):
        data.load_image_folder(tmp_path)
    with pytest.raises(ValueError, match="val_fraction"):
        data.load_image_folder(tmp_path, val_fraction=1.0)


def test_clutter_zero_is_the_target_alone_on_a_flat_background():
    for i in range(4):
        ex = data.generate_example(i, split="train", seed=9, clutter=0.0)
        assert ex.distractors == () and ex.clutter == 0.0
        outside = ex.image[~ex.mask].reshape(-1, 3)
        inside = ex.image[ex.mask].reshape(-1, 3)
        assert (outside == outside[0]).all()  # one flat colour, no texture, light or noise
        assert (inside == inside[0]).all()
        np.testing.assert_array_equal(inside[0], np.round(np.array(ex.target.color) * 255))
        # the same scene as at full clutter: same target
        full = data.generate_example(i, split="train", seed=9)
        assert full.target == ex.target
        np.testing.assert_array_equal(full.mask, ex.mask)


def test_mixed_clutter_is_per_image_and_deterministic():
    a = data.generate(40, split="train", seed=0, clutter="mixed")
    b = data.generate(40, split="train", seed=0, clutter="mixed")
    np.testing.assert_array_equal(a.clutter, b.clutter)
    np.testing.assert_array_equal(a.images, b.images)
    assert 0.0 <= a.clutter.min() < 0.3 and 0.7 < a.clutter.max() <= 1.0
    assert (data.generate(3, split="test").clutter == 1.0).all()
    with pytest.raises(ValueError, match="clutter"):
        data.generate(2, clutter="hard")


def test_targets_rotate_within_15_degrees_and_distractors_freely():
    angles = [data.generate_example(i, split="train", seed=3).target.angle for i in range(30)]
    assert max(abs(a) for a in angles) <= math.radians(15.0)
    assert max(angles) - min(angles) > math.radians(15.0)  # they do vary
    d_angles = [d.angle for i in range(30) for d in data.generate_example(i, split="train", seed=3).distractors]
    assert max(d_angles) > math.radians(180.0)
