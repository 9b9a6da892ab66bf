"""The spurious-cue audit's report: strict JSON, markdown tables, the ROC and cue-share figures, panels.

:func:`write_report` writes ``audit.json`` (:func:`to_json`), ``audit.md``
(:func:`report_markdown`), ``audit_roc.png``, ``audit_cue_share.png`` and ``audit_panel_<k>.png``
(the same image under both models) into a folder, each file atomically and under the folder's
lock. Everything here reads an :func:`saliency_jax.app.audit.audit` result; nothing runs a model.

Example:
    >>> json.loads(to_json({"ratio": float("nan"), "n": np.int64(3)}))
    {'n': 3, 'ratio': None}
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from saliency_jax._io import atomic_write, atomic_write_text, folder_lock
from saliency_jax._plotting import pyplot
from saliency_jax.app import render
from saliency_jax.app.audit_stats import MASKS
from saliency_jax.app.panels import render_image
from saliency_jax.model import evaluate as eval_lib
from saliency_jax.model.image_input import to_unit

__all__ = ["to_json", "write_report", "report_markdown", "fmt"]


def to_json(result: dict) -> str:
    """An audit result as strict JSON text (NaN and infinities as ``null``, keys sorted).

    Example:
        >>> json.loads(to_json({"ratio": float("nan"), "n": np.int64(3)}))
        {'n': 3, 'ratio': None}
    """
    return json.dumps(_jsonable(result), indent=1, sort_keys=True, allow_nan=False) + "\n"


def _jsonable(obj):
    """NaN and infinities become ``None`` (strict JSON); numpy scalars become Python numbers."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    return obj



def write_report(out: Path, result: dict, models: dict, g, sel, maps, logits, settings) -> dict:
    """Write ``audit.json``, ``audit.md`` and the figures into ``out``, each atomically.

    Args:
        out: the folder (created). result: the audit result (``files`` is added to it).
        models: ``{"cue": LoadedModel, "clean": LoadedModel}``.
        g: the clean split (:class:`~saliency_jax.model.generated.GeneratedData`); sel: the
            indices of its explained images. maps: ``{model: {method: (len(sel), H, W[, C])}}``.
        logits: ``{model: {split: (N, K)}}``. settings: the maps' ``ExplainSettings`` (panels).

    Returns:
        ``{"roc", "cue_share" (when images were explained), "panels", "markdown", "json"}``: file names.
    """
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    with folder_lock(out):
        files["roc"] = _plot_roc(out / "audit_roc.png", result)
        if result["maps"]["n_images"]:
            files["cue_share"] = _plot_cue_share(out / "audit_cue_share.png", result)
        files["panels"] = _write_panels(out, result, models, g, sel, maps, logits, settings)
        result["files"] = files
        atomic_write_text(out / "audit.md", report_markdown(result))
        files["markdown"] = "audit.md"
        files["json"] = "audit.json"
        atomic_write_text(out / "audit.json", to_json(result))
    return files


def _panel_picks(labels: np.ndarray, cue_class: int, k: int) -> list[int]:
    """Positions (into the explained images) of ``k`` panels: other-class images first, then cue-class."""
    other = list(np.flatnonzero(labels != cue_class))
    same = list(np.flatnonzero(labels == cue_class))
    n_other = min(len(other), (k + 1) // 2)
    picks = other[:n_other] + same[: k - n_other]
    return [int(i) for i in (picks + other[n_other:])[:k]]


def _write_panels(out: Path, result, models, g, sel, maps, logits, settings) -> list[str]:
    """One figure per picked image: its panel under the cue model above its panel under the clean model."""
    if not sel.size:
        return []
    classes = result["settings"]["classes"]
    cue_class = result["settings"]["cue_class"]
    names_out = []
    for j, pos in enumerate(_panel_picks(g.labels[sel], cue_class, result["settings"]["panels"])):
        k = int(sel[pos])
        display = to_unit(g.images[k])
        rows = []
        for who in ("cue", "clean"):
            probs = eval_lib.softmax(logits[who]["clean"][k : k + 1])[0]
            title = f"{who} model: {classes[g.labels[k]]}, P({classes[cue_class]})={probs[cue_class]:.2f}"
            panel, _ = render_image(display, {m: v[pos] for m, v in maps[who].items()}, classes, [cue_class], probs,
                                    settings, title=title)
            rows.append(panel)
        name = f"audit_panel_{j}.png"
        atomic_write(out / name, lambda path, im=render.stack(rows, gap=4): im.save(path, format="PNG"))
        names_out.append(name)
    return names_out



def _save_figure(plt, fig, path: Path) -> str:
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path.name


def _plot_roc(path: Path, result: dict) -> str:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    styles = {"biased": "-", "clean": "--", "none": ":"}
    for who, color in (("cue", "tab:red"), ("clean", "tab:blue")):
        for split, r in result["classifier"][who].items():
            ax.plot(r["roc"]["fpr"], r["roc"]["tpr"], styles[split], color=color, lw=1.6,
                    label=f"{who} model, {split} test (AUC {r['auc']:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.7)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01))
    ax.set_title(f"ROC of '{result['settings']['classes'][result['settings']['cue_class']]}'", fontsize=10)
    ax.legend(loc="lower right", fontsize=7)
    return _save_figure(plt, fig, path)


def _plot_cue_share(path: Path, result: dict) -> str:
    plt = pyplot()
    methods = result["settings"]["methods"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), dpi=100)
    for ax, mask in zip(axes, MASKS):
        for j, (who, color) in enumerate((("cue", "tab:red"), ("clean", "tab:blue"))):
            c = [result["maps"]["methods"][m][mask]["energy"] for m in methods]
            mean = np.array([v[f"{who}_mean"] for v in c])
            ci = np.array([v[f"{who}_mean_ci"] for v in c]).T
            x = np.arange(len(methods)) + (j - 0.5) * 0.38
            ax.bar(x, mean, width=0.38, color=color, label=f"{who} model",
                   yerr=np.abs(ci - mean[None, :]), capsize=3)
        ax.set_xticks(np.arange(len(methods)), methods)
        ax.set_title(f"share of positive map mass on the {mask}", fontsize=9)
        ax.legend(fontsize=7)
    if "cue_area_share" in result["maps"]:
        axes[1].axhline(result["maps"]["cue_area_share"], color="grey", lw=0.8, ls=":")
    return _save_figure(plt, fig, path)


def fmt(v, spec: str = ".3f") -> str:
    """``v`` formatted with ``spec``; ``"n/a"`` for ``None`` and non-finite floats.

    Example:
        >>> fmt(0.12345), fmt(float("nan")), fmt(2.0, "g")
        ('0.123', 'n/a', '2')
    """
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, spec)


def report_markdown(result: dict) -> str:
    """The audit's markdown report (tables of every section, the figures, the check)."""
    s = result["settings"]
    cls = s["classes"][s["cue_class"]]
    lines = [
        "# Spurious-cue audit",
        "",
        f"Cue model: `{result['models']['cue']['path']}` (trained with the mark on a fraction "
        f"{fmt(result['models']['cue']['spurious_cue'], 'g')} of the '{cls}' training images; command "
        f"`{result['models']['cue']['command']}`). Clean model: `{result['models']['clean']['path']}`.",
        f"Test images: n = {s['n']} per split from index {s['start']}; biased split p = {s['spurious_cue']:g}; "
        f"maps explain {s['map_target']} ('{cls}').",
        "",
        *_classifier_lines(result),
        *_map_lines(result),
        *_transfer_lines(result),
        "## Check",
        "",
        f"{'PASSED' if result['check']['passed'] else 'FAILED'}: methods {result['check']['methods']}, "
        f"min ratio {result['check']['min_ratio']:g}.",
        *[f"- {r}" for r in result["check"]["reasons"]],
        "",
    ]
    files = result.get("files", {})
    if files:
        lines += ["## Figures", "", f"![ROC]({files.get('roc')})", ""]
        if files.get("cue_share"):
            lines += [f"![share of positive mass]({files['cue_share']})", ""]
        lines += [f"![panel]({p})" for p in files.get("panels", [])] + [""]
        lines += ["Each panel: the image under the cue model (top) and the clean model (bottom): image | "
                  + " | ".join(s["methods"]) + f", all of the '{cls}' logit.", ""]
    return "\n".join(lines)


def _classifier_lines(result: dict) -> list[str]:
    cls = result["settings"]["classes"][result["settings"]["cue_class"]]
    lines = ["## Classifier metrics", "",
             f"ROC-AUC and AP of '{cls}'. *biased*: the mark rides with '{cls}' as in training; *clean*: the mark "
             "on half of all images, independent of the label; *none*: no mark.", "",
             "| model | split | ROC-AUC | AP | accuracy | mark rate per class |", "|---|---|---|---|---|---|"]
    for who, rows in result["classifier"].items():
        for split, r in rows.items():
            rate = ", ".join(f"{k} {v:.2f}" for k, v in r["cue_rate"].items())
            lines.append(f"| {who} | {split} | {r['auc']:.4f} | {r['average_precision']:.4f} | {r['accuracy']:.4f} | {rate} |")
    lines += ["", "The mark's direct effect (clean split, same image with and without the mark): change of the margin "
              f"logit[{cls}] − other logit.", "",
              "| model | images with the mark | mean margin change | other class: mean change | other class flipped |",
              "|---|---|---|---|---|"]
    for who, e in result["cue_effect"].items():
        lines.append(f"| {who} | {e['n']} | {fmt(e['mean_margin_change'])} | {fmt(e['mean_margin_change_other_class'])} "
                     f"| {fmt(e['flipped_to_cue_class'])} |")
    return lines + [""]


def _map_lines(result: dict) -> list[str]:
    m = result["maps"]
    s = result["settings"]
    lines = ["## Map metrics", "",
             f"{m['n_images']} clean-split images carrying the mark; mark area {fmt(m['cue_area_share'], '.4f')} of the "
             f"image (a uniform map's share), object {fmt(m['object_area_share'], '.3f')}. *energy*: share of positive "
             f"map mass in the mask (backprop maps: max_c |m|); *pointing*: peak within {s['tolerance']:g} px; "
             "*strict*: peak on the mask. Ratio = cue model / clean model, mean over images, paired bootstrap 95% CI; "
             "per-image ratio quartiles over images with a positive clean value.", ""]
    if not m["n_images"]:
        return lines + ["No image carried the mark.", ""]
    lines += ["| method | mask | metric | cue model | clean model | ratio (95% CI) | per-image ratio q25/median/q75 "
              "| cue model higher |", "|---|---|---|---|---|---|---|---|"]
    for method, per in m["methods"].items():
        for mask in MASKS:
            for metric in ("energy", "pointing", "pointing_strict"):
                c = per[mask][metric]
                q = c["per_image_ratio"]
                lines.append(
                    f"| {method} | {mask} | {metric} | {fmt(c['cue_mean'])} | {fmt(c['clean_mean'])} | {fmt(c['ratio'], '.2f')} "
                    f"({fmt(c['ratio_ci'][0], '.2f')}–{fmt(c['ratio_ci'][1], '.2f')}) | {fmt(q['q25'], '.2f')}/"
                    f"{fmt(q['median'], '.2f')}/{fmt(q['q75'], '.2f')} | {fmt(c['cue_higher'], '.2f')} |")
    lines += ["", "By class (share of positive mass on the mark, mean): ", ""]
    lines += ["| method | class group | n | cue model | clean model |", "|---|---|---|---|---|"]
    for method, per in m["methods"].items():
        for gname, gv in per["cue"]["energy"]["groups"].items():
            lines.append(f"| {method} | {gname} | {gv['n']} | {fmt(gv['cue_mean'])} | {fmt(gv['clean_mean'])} |")
    return lines + [""]


def _transfer_lines(result: dict) -> list[str]:
    t = result["deconvnet_experiment"]
    cls = result["settings"]["classes"][result["settings"]["cue_class"]]
    lines = ["## The deconvnet experiment", "",
             f"Each model's deconvnet map of '{cls}' added to {t['n_images']} images of the other class without the "
             f"mark (peak amplitude ε = {t['epsilon']:g} in model-input units); control: Gaussian noise of the same L2 "
             "norm.", "",
             "| model | margin before | change, signal (95% CI) | change, noise | P before | P signal | P noise "
             "| flipped, signal | flipped, noise |", "|---|---|---|---|---|---|---|---|---|"]
    for who, r in t["models"].items():
        ci = r["margin_change_signal_ci"]
        lines.append(f"| {who} | {fmt(r['margin_before'])} | {fmt(r['margin_change_signal'])} ({fmt(ci[0])}–{fmt(ci[1])}) "
                     f"| {fmt(r['margin_change_noise'])} | {fmt(r['p_before'])} | {fmt(r['p_signal'])} | {fmt(r['p_noise'])} "
                     f"| {fmt(r['flipped_signal'])} | {fmt(r['flipped_noise'])} |")
    return lines + ["", f"Margin change, cue model / clean model: {fmt(t['ratio_margin_change'], '.2f')}.", ""]

