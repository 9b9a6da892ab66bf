"""Window geometry and the shared steps built on it (mask, per-pixel accumulation, chunking)
against brute-force loops written with plain Python and numpy."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj
from saliency_jax._validate import signature
from saliency_jax._compile import chunk_indices
from saliency_jax.occlude.windows import accumulate, window_mask

GRIDS = [
    # size, window, stride, placement
    ((9, 7), (3, 3), (3, 3), "clip"),
    ((10, 7), (4, 3), (3, 2), "clip"),
    ((10, 7), (4, 3), (3, 2), "valid"),
    ((8, 11), (5, 2), (2, 2), "clip"),
    ((7, 9), (7, 4), (1, 3), "valid"),
    ((1, 5), (1, 3), (1, 2), "clip"),
]


def brute_windows(size, window, stride, placement):
    """Every window as (row slice, col slice), row-major, by stepping the origin by hand."""
    def axis(dim, w, s):
        out, o = [], 0
        while True:
            if placement == "valid" and o + w > dim:
                break
            out.append(slice(o, min(o + w, dim)))
            if o + w >= dim:
                break
            o += s
        return out

    return list(itertools.product(axis(size[0], window[0], stride[0]), axis(size[1], window[1], stride[1])))


@pytest.mark.parametrize("size, window, stride, placement", GRIDS)
def test_grid_mask_and_coverage_match_brute_force(size, window, stride, placement):
    grid = sj.window_grid(size, window, stride, placement)
    windows = brute_windows(size, window, stride, placement)
    assert grid.size == len(windows)
    count = np.zeros(size, np.int64)
    rows, cols = jnp.arange(size[0]), jnp.arange(size[1])
    for p, (ys, xs) in enumerate(windows):
        expected = np.zeros(size, bool)
        expected[ys, xs] = True
        count += expected
        i, j = divmod(p, grid.shape[1])
        np.testing.assert_array_equal(window_mask(grid, jnp.int32(i), jnp.int32(j), rows, cols), expected)
    np.testing.assert_array_equal(sj.coverage(grid, size), count)


@pytest.mark.parametrize("combine", ["mean", "sum"])
@pytest.mark.parametrize("size, window, stride, placement", GRIDS)
def test_accumulate_matches_a_loop_over_windows(size, window, stride, placement, combine):
    grid = sj.window_grid(size, window, stride, placement)
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, *grid.shape, 3)).astype(np.float32)
    total = np.zeros((2, 3, *size))
    count = np.zeros(size)
    for p, (ys, xs) in enumerate(brute_windows(size, window, stride, placement)):
        i, j = divmod(p, grid.shape[1])
        total[:, :, ys, xs] += scores[:, i, j, :, None, None]
        count[ys, xs] += 1
    expected = total / np.maximum(count, 1) if combine == "mean" else total
    expected = np.where(count > 0, expected, np.nan)
    ours = np.asarray(accumulate(jnp.asarray(scores), grid, size, combine))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("total, chunk_size, n_groups", [(7, 3, 1), (16, 5, 1), (18, 5, 1), (32, 3, 4), (1, 8, 2)])
def test_chunk_indices_cover_every_index_once_in_equal_chunks(total, chunk_size, n_groups):
    idx = np.asarray(chunk_indices(total, chunk_size, n_groups))
    groups, n_chunks, chunk = idx.shape
    assert groups == n_groups and chunk <= chunk_size
    flat = idx.reshape(-1)
    np.testing.assert_array_equal(flat[:total], np.arange(total))
    assert (flat[total:] == total - 1).all()
    assert len(flat) - total < groups * n_chunks  # padding: less than one entry per chunk
    assert n_chunks == -(-total // (chunk_size * n_groups))  # no more chunks than the size allows


def test_signature_keys_shapes_and_dtypes_not_values():
    a = {"w": np.zeros((2, 3), np.float32), "b": np.ones((3,), np.float32)}
    b = {"w": np.ones((2, 3), np.float32), "b": np.zeros((3,), np.float32)}
    assert signature(a) == signature(b) and hash(signature(a)) == hash(signature(b))
    assert signature(a) != signature({**a, "w": np.zeros((2, 4), np.float32)})
    assert signature(a) != signature({**a, "w": np.zeros((2, 3), np.float16)})
    assert signature(a) == signature(jax.tree.map(jnp.asarray, a))


@pytest.mark.parametrize(
    "args, error, fragment",
    [
        (((8, 6), 9), ValueError, "`window` (=9) must fit inside the image (H=8, W=6)"),
        (((8, 6), 0), ValueError, "`window` (=0) must be >= 1 along both axes"),
        (((8, 6), (2, 2, 2)), TypeError, "`window` (=(2, 2, 2)) must be an int or a pair of ints (rows, cols)"),
        (((8, 6), True), TypeError, "`window` (=True) must be an int or a pair of ints"),
        (((8, 6), 3, 4), ValueError, "`stride` (=4) must not exceed `window` (=3)"),
        (((8, 6), 3, (1, 0)), ValueError, "`stride` (=(1, 0)) must be >= 1 along both axes"),
        (((8, 6), 3, 1, "same"), ValueError, "`placement` (='same') must be one of ('clip', 'valid')"),
        (((8.0, 6), 3), TypeError, "`size` (=(8.0, 6))"),
    ],
)
def test_window_grid_rejects_bad_arguments(args, error, fragment):
    with pytest.raises(error) as info:
        sj.window_grid(*args)
    assert fragment in str(info.value)


def test_accumulate_rejects_an_unknown_combine():
    grid = sj.window_grid((4, 4), 2)
    with pytest.raises(ValueError, match=r"`combine` \(='max'\) must be one of \('mean', 'sum'\)"):
        accumulate(jnp.zeros((1, 2, 2, 1)), grid, (4, 4), "max")
