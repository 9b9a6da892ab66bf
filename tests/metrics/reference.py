"""Brute-force numpy references for the metrics: plain loops over images, pixels and pairs.

Written from the definitions, independently of the jnp code (no shared helpers).
"""

from __future__ import annotations

import math

import numpy as np


def relevance(m: np.ndarray) -> np.ndarray:
    """One image's relevance (H, W): max_c |m| for (H, W, C); NaN -> -inf."""
    m = np.asarray(m, np.float64)
    if m.ndim == 3:
        out = np.full(m.shape[:2], -np.inf)
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                vals = [abs(v) for v in m[i, j] if not math.isnan(v)]
                if vals:
                    out[i, j] = max(vals)
        return out
    return np.where(np.isnan(m), -np.inf, m)


def pointing_game(m, mask, tolerance) -> float:
    rel = relevance(m)
    if not mask.any() or np.isneginf(rel).all():
        return float("nan")
    best, at = -np.inf, None
    for i in range(rel.shape[0]):          # first maximum in row-major order
        for j in range(rel.shape[1]):
            if at is None or rel[i, j] > best:
                best, at = rel[i, j], (i, j)
    for i, j in zip(*np.nonzero(mask)):
        if math.hypot(i - at[0], j - at[1]) <= tolerance:
            return 1.0
    return 0.0


def energy_pointing_game(m, mask) -> float:
    rel = relevance(m)
    inside = total = 0.0
    for i in range(rel.shape[0]):
        for j in range(rel.shape[1]):
            if rel[i, j] > 0:
                total += rel[i, j]
                inside += rel[i, j] if mask[i, j] else 0.0
    if total == 0 or not mask.any():
        return float("nan")
    return inside / total


def relevance_rank(m, mask, trials: int | None = None, seed: int = 0) -> float:
    """Exact expectation over tie-breaking: enumerate the tie groups in descending order."""
    rel = relevance(m).ravel()
    mk = np.asarray(mask).ravel()
    k = int(mk.sum())
    if k == 0:
        return float("nan")
    taken = 0.0
    left = k
    for v in sorted(set(rel.tolist()), reverse=True):
        group = [i for i in range(rel.size) if rel[i] == v]
        inside = sum(bool(mk[i]) for i in group)
        if len(group) <= left:
            taken += inside
            left -= len(group)
        else:
            taken += left * inside / len(group)
            left = 0
        if left == 0:
            break
    return taken / k


def pixel_auc(m, mask) -> float:
    """Pair count: every (mask pixel, background pixel) pair, ties counted 1/2."""
    rel = relevance(m).ravel()
    mk = np.asarray(mask).ravel()
    pos, neg = rel[mk], rel[~mk]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    score = 0.0
    for p in pos:
        for q in neg:
            score += 1.0 if p > q else 0.5 if p == q else 0.0
    return score / (len(pos) * len(neg))
