"""Building the report: tables, figures, Grad-CAM and the page, from run files alone."""

from __future__ import annotations

import html
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from osteo.io import atomic_write_csv, atomic_write_json, atomic_write_text
from osteo.report import figures
from osteo.report.runs import ensemble, load_runs
from osteo.report.tables import clinical_baseline, config_summary, paired_comparisons, table2

BASELINE = "age + sex (logistic regression)"


def _attributes(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (pretrained, backbone, depth), in report order."""
    return (runs.groupby("config")[["pretrained", "backbone", "depth"]].first()
            .sort_values(["pretrained", "backbone", "depth"]))


def _best_fold(runs: pd.DataFrame):
    """The run with a checkpoint and the highest validation AUC among ``runs``, or None."""
    have = runs.dropna(subset=["checkpoint"]).sort_values("val_auc", ascending=False)
    return have.iloc[0] if len(have) else None


def _cases(test: pd.DataFrame, thr: float, per_kind: int) -> dict[str, pd.DataFrame]:
    pos = test["prob"] >= thr
    y = test["label"] == 1
    kinds = {"TP": pos & y, "TN": ~pos & ~y, "FP": pos & ~y, "FN": ~pos & y}
    # the most confident cases of each kind
    return {k: test[m].assign(conf=(test["prob"] - thr).abs()).sort_values("conf", ascending=False).head(per_kind)
            for k, m in kinds.items()}


def _gradcam_section(best: str, runs: pd.DataFrame, ens_best: pd.DataFrame, thr: float,
                     rcfg: DictConfig, out: Path, order: list[str]) -> tuple[list[str], pd.DataFrame | None, str]:
    """Galleries for the best configuration and, on phantoms, the border-band statistic."""
    from osteo.checkpoints import load_datamodule, load_model
    from osteo.data.cache import image_boxes
    from osteo.gradcam import border_band_ratio, grad_cams, roi_border_rows

    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = _best_fold(runs[runs["config"] == best])
    if run is None:
        return [], None, "no checkpoint of the best configuration: Grad-CAM skipped"
    dm = load_datamodule(run["dir"])
    model, _ = load_model(run["dir"], device=device)
    pos_of = {img: i for i, img in enumerate(dm.df["image_rel"])}

    def cams_for(mdl, images):
        idx = np.array([pos_of[i] for i in images])
        x = dm.normalise(torch.from_numpy(dm.rois[idx])[:, None]).to(device)
        out_ = [grad_cams(mdl, x[s:s + 8]) for s in range(0, len(x), 8)]
        return dm.rois[idx], np.concatenate(out_) if out_ else np.zeros((0,) + dm.rois.shape[1:])

    files = []
    for kind, sub in _cases(ens_best, thr, int(rcfg.gradcam.per_kind)).items():
        rois, cams = cams_for(model, list(sub["image"]))
        caps = [f"{kind}  p={p:.2f}  label={int(y)}  {img}" for p, y, img in zip(sub["prob"], sub["label"], sub["image"])]
        f = figures.cam_gallery(rois, cams, caps, out / f"gradcam_{kind}.png",
                                f"Grad-CAM, {run['config']} (fold {run['fold']}): {kind}")
        files.append(f.name)
    note = (f"Grad-CAM of the fold-{run['fold']} model of {run['config']} (its best validation AUC), on the "
            "ReLU after the last convolution of the last block, for the predicted class; cases are the most "
            "confident of each kind at the validation-chosen threshold of the fold ensemble.")
    truth = ["border_xc", "border_yc", "border_a", "border_c", "border_tilt", "border_halfwidth",
             "width", "height", "pixel_spacing_mm"]
    if not set(truth) <= set(dm.df.columns):
        return files, None, note + " The manifest has no ground-truth border: no border-band statistic."
    df = dm.df
    rows = []
    test_imgs = list(df["image_rel"].iloc[dm.idx["test"]])[: int(rcfg.gradcam.max_images)]
    roi = dm.roi
    boxes = image_boxes(df, roi)
    for label in tqdm(order, desc="Grad-CAM border band", unit="config"):
        fold_run = _best_fold(runs[runs["config"] == label])
        if fold_run is None:
            continue
        mdl, _ = load_model(fold_run["dir"], device=device)
        _, cams = cams_for(mdl, test_imgs)
        for img, cam in zip(test_imgs, cams):
            r = df.iloc[pos_of[img]].to_dict()
            box = boxes[pos_of[img]]
            band_px = float(rcfg.gradcam.band_mm) / (r["pixel_spacing_mm"] * r["height"] / roi["resize_wh"][1]) * roi["scale"]
            rows.append({"configuration": label, "label": int(r["label"]),
                         "ratio": border_band_ratio(cam, roi_border_rows(r, roi, box), band_px)})
    band = (pd.DataFrame(rows).groupby(["configuration", "label"])["ratio"].agg(["mean", "std", "count"])
            .unstack("label"))
    band.columns = [f"{a} ({'osteoporosis' if b else 'normal'})" for a, b in band.columns]
    band = band.reindex([c for c in order if c in band.index]).reset_index()
    return files, band, note


def methods_text(cfg: DictConfig, runs: pd.DataFrame, command: str) -> str:
    """A short methods paragraph generated from a run's config."""
    d = cfg.data
    data = (f"the manifest {d.manifest}" if d.manifest else
            f"{d.phantom.n} synthetic DPR phantoms (osteo's generator, seed {d.phantom.seed}, difficulty "
            f"{d.phantom.difficulty}, framing spread {d.phantom.framing_spread})")
    split = (f"{d.split.test_per_class} test images per class" if d.split.test_per_class is not None
             else f"a stratified {d.split.test_fraction:.0%} test set")
    rule = f"T-score {'<=' if d.label.inclusive else '<'} {d.label.threshold}"
    return (f"Data: {data}; osteoporosis when {rule}. Each DPR was resized bilinearly to "
            f"{d.roi.resize_wh[0]}x{d.roi.resize_wh[1]} (W x H) and the ROI box (x0, y0, w, h) = "
            f"{tuple(d.roi.box_xywh)} cropped" + (f" and scaled by {d.roi.scale}" if d.roi.scale != 1 else "") +
            f". Split (seed {d.split.seed}, patient-level): {split} held out, then {d.split.n_folds}-fold "
            f"stratified group cross-validation of the rest. Training: {cfg.model.optimizer._target_.split('.')[-1]} "
            f"lr {cfg.model.optimizer.lr}, batch {d.batch_size}, up to {cfg.trainer.max_epochs} epochs with early "
            f"stopping on validation AUC (patience {cfg.trainer.early_stopping_patience}), best checkpoint by "
            f"validation AUC, seed {cfg.seed}. {len(runs)} finished runs. The test set was scored once per run "
            f"and never used for any choice: thresholds come from out-of-fold validation predictions and the best "
            f"configuration is the one with the highest mean validation AUC. Rebuilt with: <code>{html.escape(command)}</code>")


def _table_html(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    return df.to_html(index=False, float_format=lambda v: floatfmt.format(v), border=0, classes="t", na_rep="n/a")


def build_report(runs_dir: str | Path, out_dir: str | Path, rcfg: DictConfig, command: str = "") -> dict:
    """Write outputs/report (index.html, tables as CSV, figures as PNG); return a summary."""
    from osteo.data.describe import table1
    from osteo.data.manifest import load_manifest

    runs_dir, out = Path(runs_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs, preds, problems = load_runs(runs_dir)
    missing = pd.DataFrame(problems, columns=["run", "status", "detail"])
    atomic_write_csv(out / "missing_runs.csv", missing)
    if not len(runs):
        atomic_write_text(out / "index.html", f"<html><body><h1>osteo report</h1><p>No finished runs under "
                          f"{html.escape(str(runs_dir))}.</p>{_table_html(missing)}</body></html>")
        return {"configs": {}, "missing": problems}
    attrs = _attributes(runs)
    order = list(attrs.index)
    summaries, ens, folds = {}, {}, {}
    for label in order:
        g = runs[runs["config"] == label]
        summaries[label] = config_summary(g, preds, float(rcfg.sensitivity_target), int(rcfg.calibration_bins))
        ens[label] = ensemble(g, preds, "test")
        tests = [preds[dd][preds[dd]["split"] == "test"] for dd in g["dir"]]
        folds[label] = [(t["label"].to_numpy(), t["prob"].to_numpy()) for t in tests]
    best = max(order, key=lambda k: summaries[k]["val_auc_mean"])
    first = runs.iloc[0]
    cfg0 = OmegaConf.load(Path(first["dir"]) / "config.yaml")
    mdf = load_manifest(first["manifest"], cfg0.data.label.threshold, cfg0.data.label.inclusive)
    splits = pd.read_csv(first["splits"], dtype={"patient_id": str, "part": str})
    mdf = mdf[mdf["image_rel"].isin(splits["image"])]
    notes = []
    if runs["splits"].nunique() > 1:
        notes.append("Runs used different split files; paired tests use the images they share.")
    base, base_pred, base_note = clinical_baseline(mdf, splits, int(cfg0.data.split.n_folds),
                                                   float(rcfg.sensitivity_target))
    notes.append(base_note)
    all_summ = dict(summaries)
    if base is not None:
        all_summ[BASELINE] = base
        ens[BASELINE] = base_pred
    t1 = table1(mdf)
    t2 = table2(all_summ)
    comps = paired_comparisons(ens, best)
    atomic_write_csv(out / "table1.csv", t1.reset_index().rename(columns={"index": "parameter"}))
    atomic_write_csv(out / "table2.csv", t2)
    atomic_write_csv(out / "table2_raw.csv", pd.DataFrame(all_summ).T.reset_index(names="configuration"))
    atomic_write_csv(out / "paired_tests.csv", comps)

    figs = {}
    aucs = {k: (summaries[k]["auc_mean"], summaries[k]["auc_sd"]) for k in order}
    figs["roc"] = figures.curves_figure(folds, out / "roc.png", "roc", aucs).name
    figs["pr"] = figures.curves_figure(folds, out / "pr.png", "pr").name
    figs["params"] = figures.auc_vs_params(summaries, out / "auc_vs_params.png").name
    same_backbone = attrs[attrs["backbone"] == attrs.loc[best, "backbone"]]
    pre = list(same_backbone.index[same_backbone["pretrained"].astype(bool)])
    group = pre if len(pre) > 1 else list(same_backbone.index)
    if len(group) > 1:
        depths = [int(attrs.loc[k, "depth"]) for k in group]
        figs["depth"] = figures.auc_by_depth(depths, [summaries[k] for k in group], out / "auc_by_depth.png").name
    figs["reliability"] = figures.reliability(ens[best]["label"], ens[best]["prob"], out / "reliability.png",
                                              int(rcfg.calibration_bins), f"{best}: fold ensemble on test").name
    cam_files, band, cam_note = [], None, "Grad-CAM disabled (report.gradcam.enabled=false)."
    if rcfg.gradcam.enabled:
        cam_files, band, cam_note = _gradcam_section(best, runs, ens[best],
                                                     summaries[best]["ens_threshold"], rcfg, out, order)
        if band is not None:
            atomic_write_csv(out / "gradcam_border_band.csv", band)
    page = _page(t1, t2, comps, missing, figs, cam_files, band, cam_note, notes, best,
                 methods_text(cfg0, runs, command))
    atomic_write_text(out / "index.html", page)
    summary = {"best": best, "configs": all_summ, "missing": problems, "figures": figs, "gradcam": cam_files}
    atomic_write_json(out / "summary.json", summary)
    return summary


def _page(t1, t2, comps, missing, figs, cam_files, band, cam_note, notes, best, methods) -> str:
    img = lambda f, w=640: f'<img src="{f}" width="{w}">'  # noqa: E731
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>osteo report</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
        "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{border:1px solid #ccc;padding:3px 6px}"
        "</style></head><body>",
        "<h1>osteo: osteoporosis screening from dental panoramic radiographs</h1>",
        f"<p>{methods}</p>",
        "<h2>Table 1: demographics</h2>", t1.to_html(border=0, classes="t"),
        "<h2>Table 2: models</h2>",
        "<p>AUC, sensitivity, specificity and accuracy at probability 0.5 on the test set, mean ± SD over "
        "folds (as the thesis). Ensemble: the mean probability of the fold models, with DeLong's 95% CI. "
        "Operating points use thresholds chosen on out-of-fold validation predictions and are applied to "
        f"the test set. Best configuration by mean validation AUC: <b>{html.escape(best)}</b>.</p>",
        _table_html(t2), "<p>" + " ".join(html.escape(n) for n in notes) + "</p>",
        "<h2>Paired comparisons against the best configuration</h2>",
        "<p>DeLong's paired test on the shared test images; p-values Holm-corrected.</p>",
        _table_html(comps, "{:.4f}") if len(comps) else "<p>Only one configuration.</p>",
        "<h2>Figures</h2>", img(figs["roc"]), img(figs["pr"]), img(figs["params"], 520),
        img(figs["depth"], 520) if "depth" in figs else "", img(figs["reliability"], 420),
        "<h2>Grad-CAM</h2>", f"<p>{html.escape(cam_note)}</p>",
        "".join(img(f, 900) + "<br>" for f in cam_files),
    ]
    if band is not None:
        parts += ["<h3>Grad-CAM mass near the true inferior border (phantoms)</h3>",
                  "<p>Share of CAM mass within the band around the ground-truth border divided by the band's "
                  "share of the ROI area: 1 is no preference, well above 1 means the model looks at the cortex.</p>",
                  _table_html(band, "{:.2f}")]
    parts += ["<h2>Missing, failed or unfinished runs</h2>",
              _table_html(missing) if len(missing) else "<p>None.</p>", "</body></html>"]
    return "\n".join(parts)


def command_line() -> str:
    return " ".join(["python -m osteo.report"] + [shlex.quote(a) for a in sys.argv[1:]])
