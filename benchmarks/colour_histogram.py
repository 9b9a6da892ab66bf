"""Does a colour statistic solve the rings-and-crosses task? A nearest-centroid classifier on 4×4×4
colour histograms, fitted on 300 generated training images and scored on 200 generated test images
(seed 0; the same computation as ``tests/model/test_data.py``). No timing; deterministic.

Usage:  python benchmarks/colour_histogram.py [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import _provenance  # noqa: E402
from saliency_jax.model import data  # noqa: E402

__all__ = ["histograms", "nearest_centroid_accuracy", "main"]


def histograms(images: np.ndarray) -> np.ndarray:
    """``(N, 64)`` colour histograms of uint8 ``(N, H, W, 3)`` images, 4 levels per channel, summing to 1."""
    q = (images // 64).reshape(len(images), -1, 3).astype(np.int64)
    idx = q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]
    return np.stack([np.bincount(r, minlength=64) for r in idx]).astype(np.float64) / idx.shape[1]


def nearest_centroid_accuracy(n_train: int = 300, n_test: int = 200, seed: int = 0) -> float:
    """Test accuracy of the nearest class centroid (squared Euclidean) on colour histograms."""
    tr = data.generate(n_train, split="train", seed=seed)
    te = data.generate(n_test, split="test", seed=seed)
    h_tr, h_te = histograms(tr.images), histograms(te.images)
    centroids = np.stack([h_tr[tr.labels == k].mean(0) for k in (0, 1)])
    dist = ((h_te[:, None, :] - centroids[None, :, :]) ** 2).sum(-1)
    return float((dist.argmin(1) == te.labels).mean())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    provenance = _provenance.start(argv, script=__file__)
    acc = nearest_centroid_accuracy()
    result = {"classifier": "nearest centroid on 4x4x4 colour histograms", "train_images": 300, "test_images": 200,
              "seed": 0, "test_accuracy": acc, "chance": 0.5, "provenance": _provenance.finish(provenance)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "colour_histogram.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "colour_histogram.md").write_text(
        "# A colour statistic against the rings-and-crosses task\n\n"
        f"Nearest-centroid classifier on 4×4×4 colour histograms, fitted on 300 generated training images, "
        f"scored on 200 generated test images (seed 0): **test accuracy {acc:.3f}** (chance 0.5).\n\n"
        + _provenance.markdown_line(result["provenance"]) + "\n")
    print(f"test accuracy {acc:.3f}")


if __name__ == "__main__":
    main()
