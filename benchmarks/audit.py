"""The spurious-cue audit of issue 12, measured: ``saliency_jax.app.audit.audit`` on the shipped models.

The cue model (``checkpoints/rings-crosses-cue``, trained with the mark on a fraction p of the
"cross" training images) against the clean shipped model (``rings-crosses-small``), on ``--n``
generated test images per split (biased, clean, none; with the default 2000 the clean split is
exactly the cue model card's test set, so its AUC there must equal the card's ``metrics.test.auc``) and the first ``--n-maps`` clean-split
images that carry the mark; occlusion (window 16, stride 4, fill 0), deconvnet and guided
backprop maps of the "cross" logit. Everything the library reports goes to
``benchmarks/results/audit.{json,md}`` and ``audit_*.png``, plus this run's wall time, the
machine, and the cue model's training cost from its card.

Targets (issue 12): on the cue model, occlusion puts a measurably larger share of positive mass
on the cue than on the clean model (ratio and spread); the biased-test ROC-AUC is within 0.02 of
the clean model's while the clean-split AUC drops. They are reported as measured, met or not.

Usage:  python benchmarks/audit.py [--n 2000] [--n-maps 200]      (full run, writes results/)
        python benchmarks/audit.py --smoke                        (tiny, into a temporary folder)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: `benchmarks` importable
from benchmarks import _provenance  # noqa: E402
from benchmarks._lock import machine_lock  # noqa: E402

import jax  # noqa: E402

from saliency_jax._io import atomic_write_text  # noqa: E402
from saliency_jax.app import audit as audit_lib  # noqa: E402
from saliency_jax.app import audit_report  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def targets(result: dict) -> dict:
    """The issue's two targets, evaluated on an audit result."""
    c = result["classifier"]
    occ = result["maps"]["methods"].get("occlusion", {}).get("cue", {}).get("energy", {})
    gap = c["cue"]["biased"]["auc"] - c["clean"]["biased"]["auc"]
    drop = c["cue"]["biased"]["auc"] - c["cue"]["clean"]["auc"]
    return {
        "biased_auc_gap": gap,
        "biased_auc_within_0.02": abs(gap) <= 0.02,
        "cue_model_clean_split_auc_drop": drop,
        "clean_model_clean_split_auc_drop": c["clean"]["biased"]["auc"] - c["clean"]["clean"]["auc"],
        "occlusion_cue_share_ratio": occ.get("ratio"),
        "occlusion_cue_share_ratio_ci": occ.get("ratio_ci"),
        "occlusion_ratio_ci_above_1": bool(occ) and occ["ratio_ci"][0] > 1.0,
    }


def run_section(run: dict, t: dict) -> str:
    tr = run["cue_model_training"]
    lines = [
        "## This run",
        "",
        f"Machine: {run['machine']}. {run['date']}. Audit wall time {run['audit_wall_s']:.0f} s "
        f"(n = {run['n']}, n_maps = {run['n_maps']}).",
        "",
        f"Cue model training (from its card): `{tr.get('command')}`, {tr.get('epochs_completed')} epochs, "
        f"wall {tr.get('wall_seconds')} s; resources: {json.dumps(tr.get('resources'))}.",
        "",
        "## Targets (issue 12)",
        "",
        f"- Biased-test ROC-AUC, cue model − clean model: {t['biased_auc_gap']:+.4f} "
        f"({'within' if t['biased_auc_within_0.02'] else 'NOT within'} 0.02).",
        f"- Clean-split AUC drop (biased − clean): cue model {t['cue_model_clean_split_auc_drop']:+.4f}, "
        f"clean model {t['clean_model_clean_split_auc_drop']:+.4f}.",
        f"- Occlusion's share of positive mass on the cue, cue model / clean model: "
        f"{t['occlusion_cue_share_ratio']:.2f} (95% CI {t['occlusion_cue_share_ratio_ci'][0]:.2f}–"
        f"{t['occlusion_cue_share_ratio_ci'][1]:.2f}).",
        f"- Cross-check: the cue model card's test AUC (clean split, n = 2000) is {t['card_test_auc']:.4f}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="test images per split (2000: the card's test set)")
    parser.add_argument("--n-maps", dest="n_maps", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="a tiny run into a temporary folder")
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/results (smoke: a temp folder)")
    args = parser.parse_args()
    kw = dict(n=args.n, n_maps=args.n_maps)
    if args.smoke:
        kw = dict(n=8, n_maps=2, window=64, stride=64, n_boot=50, panels=1)
    out = args.out or (Path(tempfile.mkdtemp(prefix="sj-bench-audit-")) if args.smoke else RESULTS)
    provenance = _provenance.start(script=__file__)
    t0 = time.perf_counter()
    result = audit_lib.audit(out=out, progress=True, **kw)
    wall = time.perf_counter() - t0
    card = audit_lib.load_model(audit_lib.CUE_MODEL).card
    result["run"] = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared); jax {jax.__version__}; "
                   f"{jax.devices()[0].platform}; load average at the end {tuple(round(v, 2) for v in os.getloadavg())}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "audit_wall_s": wall,
        "n": kw["n"],
        "n_maps": kw["n_maps"],
        "cue_model_training": {
            "command": card["training"].get("command"),
            "epochs_completed": card["training"].get("epochs_completed"),
            "wall_seconds": card["training"].get("wall_seconds_last_call"),
            "resources": card["training"].get("resources"),
        },
    }
    result["targets"] = targets(result)
    result["targets"]["card_test_auc"] = card["metrics"]["test"]["auc"]  # the clean split's, n = 2000
    result["provenance"] = _provenance.finish(provenance)
    result = _provenance.relative(result)  # checkpoint folders and temp paths named without this machine's paths
    atomic_write_text(out / "audit.json", audit_report.to_json(result))
    atomic_write_text(out / "audit.md", audit_report.report_markdown(result) + "\n" + run_section(result["run"], result["targets"])
                      + "\n" + _provenance.markdown_line(result["provenance"]) + "\n")
    print(f"wrote {out / 'audit.md'}")
    print(audit_report.to_json(result["targets"]))


if __name__ == "__main__":
    with machine_lock(exclusive=True):  # no test session runs beside it
        main()
