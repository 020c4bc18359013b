"""Building the report: tables, figures, Grad-CAM and the page, from run files alone."""

from __future__ import annotations

import base64
import json
import logging
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from osteo.io import atomic_write_csv, atomic_write_json, atomic_write_text, staged_folder
from osteo.report import figures
from osteo.report.tables import (clinical_baseline, config_summary, logistic_baseline, mcw_baseline,
                                 paired_comparisons, table2)
from osteo.runs import ensemble, load_runs

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).resolve().parent / "templates"
DECISION_RULE = ("A threshold is chosen on the pooled out-of-fold validation predictions (each one fold "
                 "model's probability for an image it never trained on) and applied to the same kind of "
                 "score: each fold model's own probability. A fold ensemble refers an image when at least "
                 "half of its models refer it. The ensemble's AUC uses the mean probability. (Applying the "
                 "threshold to the mean probability would mix kinds of score: averaging shrinks "
                 "probabilities, so a '90% sensitivity' threshold drifts; table2_raw.csv keeps that "
                 "figure as sens_at_sens90_meanprob.)")
BASELINE = "age + sex (logistic regression)"
MCW_BASELINE = "cortical width, MCW (logistic regression)"


def _attributes(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration (pretrained, backbone, depth, covariates), in report order."""
    runs = runs if "covariates" in runs else runs.assign(covariates="")
    return (runs.groupby("config")[["pretrained", "backbone", "depth", "covariates"]].first()
            .sort_values(["pretrained", "backbone", "depth", "covariates"]))


def _best_fold(runs: pd.DataFrame):
    """The run with a checkpoint and the highest validation AUC among ``runs``, or None."""
    have = runs.dropna(subset=["checkpoint"]).sort_values("val_auc", ascending=False)
    return have.iloc[0] if len(have) else None


def _cases(test: pd.DataFrame, thr: float, per_kind: int) -> dict[str, pd.DataFrame]:
    pos = test["prob"] >= thr
    y = test["label"] == 1
    kinds = {"TP": pos & y, "TN": ~pos & ~y, "FP": pos & ~y, "FN": ~pos & y}
    # the most confident cases of each kind; confidence is computed on the subset itself (an empty
    # kind must stay empty: assigning the full column to an empty frame would add NaN rows)
    return {k: test[m].assign(conf=lambda s: (s["prob"] - thr).abs()).sort_values("conf", ascending=False)
            .head(per_kind) for k, m in kinds.items()}


def occlusion_fills(rcfg: DictConfig) -> list[str]:
    """``report.gradcam.occlusion``'s fills (osteo.occlusion.FILLS), checked: a UserError names a
    fill that is not one."""
    from osteo.occlusion import FILLS

    fills = [str(f) for f in (rcfg.gradcam.get("occlusion") or [])]
    if set(fills) - set(FILLS):
        from osteo.cli import UserError

        raise UserError(f"report.gradcam.occlusion={fills}: the fills are {', '.join(FILLS)} (or [] for none)")
    return fills


def _gradcam_section(best: str, runs: pd.DataFrame, ens_best: pd.DataFrame, thr: float,
                     rcfg: DictConfig, out: Path, order: list[str]
                     ) -> tuple[list[str], dict[str, pd.DataFrame], str]:
    """Galleries for the best configuration and, on phantoms, tables by file name: the border-band
    statistic (gradcam_border_band), the occlusion (occlusion) and its per-image probabilities
    (occlusion_images); none without a ground-truth border. Each model sees the ROIs of its own
    run's data settings (scale, box, normalisation), as it did in training."""
    from osteo.checkpoints import load_datamodule, load_model, run_config
    from osteo.data.cache import image_boxes
    from osteo.data.phantom import roi_border_rows
    from osteo.gradcam import border_band_ratio, cortex_soft_masses, grad_cams, probs_cams_features
    from osteo.occlusion import SIDES, hide_band
    from osteo.stats import delong_ci, delong_paired

    device = "cuda" if torch.cuda.is_available() else "cpu"
    run = _best_fold(runs[runs["config"] == best])
    if run is None:
        return [], {}, "no checkpoint of the best configuration: Grad-CAM skipped"
    blocks = [int(b) for b in rcfg.gradcam.target_blocks]
    fills = occlusion_fills(rcfg)
    data_sets: dict[str, dict] = {}  # per data setting (fold aside): its datamodule, then its test set

    def data_of(run_dir) -> dict:
        """{"dm": the run's datamodule} shared by the runs whose data settings differ only in the
        fold; ``test_set`` adds "test" to it."""
        data = OmegaConf.to_container(run_config(run_dir).data, resolve=True)
        data.pop("fold", None)
        key = json.dumps(data, sort_keys=True, default=str)
        if key not in data_sets:
            data_sets[key] = {"dm": load_datamodule(run_dir)}
        return data_sets[key]

    def standardised_covariates(dm, run_dir) -> np.ndarray | None:
        """Every manifest row's covariates, standardised with the run's own fold transform (its
        covariates.json); None for a run without covariates."""
        from osteo.data.covariates import apply_transform, covariate_matrix, load_transform

        t = load_transform(run_dir)
        return None if t is None else apply_transform(covariate_matrix(dm.df, t["names"]), t)

    def cams_for(dm, mdl, covs, idx, block=blocks[0]) -> np.ndarray:
        """Grad-CAM maps [N, H, W] of manifest rows ``idx`` (may be empty: a kind with no case)."""
        x = dm.normalise(torch.from_numpy(dm.rois[idx])[:, None]).to(device)
        c = None if covs is None else torch.from_numpy(covs[idx]).to(device)
        out_ = [grad_cams(mdl, x[s:s + 8], block=block, c=None if c is None else c[s:s + 8])
                for s in range(0, len(x), 8)]
        return np.concatenate(out_) if out_ else np.zeros((0,) + dm.rois.shape[1:])

    def probs_for(dm, mdl, covs, idx, rois) -> np.ndarray:
        """Class-1 probabilities [N] of ``rois`` [N, H, W] (manifest rows ``idx``)."""
        p = []
        for s in range(0, len(idx), 32):
            x = dm.normalise(torch.from_numpy(np.ascontiguousarray(rois[s:s + 32]))[:, None]).to(device)
            c = None if covs is None else torch.from_numpy(covs[idx[s:s + 32]]).to(device)
            p.append(probs_cams_features(mdl, x, cams=False, c=c)[0])
        return np.concatenate(p)

    dm = data_of(run["dir"])["dm"]
    model, _ = load_model(run["dir"], device=device)
    pos_of = {img: i for i, img in enumerate(dm.df["image_rel"])}
    files = []
    names = {"TP": "true positives", "TN": "true negatives", "FP": "false positives", "FN": "false negatives"}
    covs = standardised_covariates(dm, run["dir"])
    for kind, sub in _cases(ens_best, thr, int(rcfg.gradcam.per_kind)).items():
        idx = np.array([pos_of[i] for i in sub["image"]], dtype=np.int64)
        cams = cams_for(dm, model, covs, idx)
        caps = [f"{kind}  p={p:.2f}  label={int(y)}  {img}" for p, y, img in zip(sub["prob"], sub["label"], sub["image"])]
        f = figures.cam_gallery(dm.rois[idx], cams, caps, out / f"gradcam_{kind}.png",
                                f"Grad-CAM, {run['config']} (fold {run['fold']}): {kind}")
        files.append({"file": f.name, "title": f"Grad-CAM of {names[kind]} ({kind}), {run['config']}",
                      "caption": f"Left: the ROI the network sees; right: Grad-CAM for the predicted class "
                                 f"over it. The {len(sub)} most confident {names[kind]} of the fold ensemble "
                                 f"at the validation-chosen threshold."})
    note = (f"Grad-CAM of the fold-{run['fold']} model of {run['config']} (its best validation AUC), on the "
            f"ReLU after the last convolution of block {blocks[0]} (report.gradcam.target_blocks), for the "
            "predicted class; cases are the most confident of each kind at the validation-chosen threshold of "
            "the fold ensemble.")
    truth = ["border_xc", "border_yc", "border_a", "border_c", "border_tilt", "border_halfwidth",
             "width", "height", "pixel_mm"]
    if not set(truth) <= set(dm.df.columns):
        return files, {}, note + " The manifest has no ground-truth border: no border-band statistic."

    def test_set(d: dict) -> dict:
        """The test images of ``d["dm"]``: manifest rows, labels, ROIs, true border [N, W] and
        cortical width [N] in ROI rows, mm per ROI row, and the ROIs with each band hidden."""
        if "test" not in d:
            dm = d["dm"]
            df, roi = dm.df, dm.roi
            boxes = image_boxes(df, roi)
            idx = np.asarray(dm.idx["test"], dtype=np.int64)
            rows_ = [df.iloc[i].to_dict() for i in idx]
            row_mm = np.array([r["pixel_mm"] * r["height"] / roi["resize_wh"][1] / roi["scale"] for r in rows_])
            t = {"idx": idx, "y": df["label"].to_numpy()[idx], "rois": dm.rois[idx], "row_mm": row_mm,
                 "borders": np.stack([roi_border_rows(r, roi, boxes[i]) for r, i in zip(rows_, idx)]),
                 "widths": np.array([r["cortical_width_mm"] for r in rows_]) / row_mm}
            t["hidden"] = {(fill, side): hide_band(t["rois"], t["borders"], t["widths"], side, fill)
                           for fill in fills for side in SIDES}
            d["test"] = t
        return d["test"]

    rows, occl, occl_images = [], [], []
    n_cam = int(rcfg.gradcam.max_images)  # the border-band statistic: the first test images; occlusion: all
    for label in tqdm(order, desc="Grad-CAM border band and occlusion", unit="config"):
        fold_run = _best_fold(runs[runs["config"] == label])
        if fold_run is None:
            continue
        d = data_of(fold_run["dir"])
        fdm, t = d["dm"], test_set(d)
        mdl, _ = load_model(fold_run["dir"], device=device)
        fold_covs = standardised_covariates(fdm, fold_run["dir"])
        if fills:
            p0 = probs_for(fdm, mdl, fold_covs, t["idx"], t["rois"])
            auc0 = delong_ci(t["y"], p0)[0]
            per = pd.DataFrame({"configuration": label, "fold": int(fold_run["fold"]),
                                "image": fdm.df["image_rel"].to_numpy()[t["idx"]], "label": t["y"], "prob": p0})
            for fill in fills:
                row = {"configuration": label, "fold": int(fold_run["fold"]), "hidden by": fill,
                       "test images": len(t["idx"]), "AUC": auc0}
                for side, name in zip(SIDES, ("cortex", "soft tissue")):
                    p = probs_for(fdm, mdl, fold_covs, t["idx"], t["hidden"][(fill, side)])
                    per[f"prob, {name} hidden ({fill})"] = p
                    test = delong_paired(t["y"], p0, p)
                    row[f"AUC, {name} hidden"] = test["auc2"]
                    row[f"p (DeLong), {name} hidden"] = test["p"]
                    row[f"mean |change of p|, {name} hidden"] = float(np.mean(np.abs(p - p0)))
                occl.append(row)
            occl_images.append(per)
        for block in blocks:
            cams = cams_for(fdm, mdl, fold_covs, t["idx"][:n_cam], block)
            for k, cam in enumerate(cams):
                cortex, soft = cortex_soft_masses(cam, t["borders"][k], t["widths"][k])
                rows.append({"configuration": label, "target": f"block {block}", "label": int(t["y"][k]),
                             "ratio": border_band_ratio(cam, t["borders"][k],
                                                        float(rcfg.gradcam.band_mm) / t["row_mm"][k]),
                             "cortex": cortex, "soft": soft})
    per_image = pd.DataFrame(rows)
    per_image["cortex/soft"] = per_image["cortex"] / per_image["soft"].where(per_image["soft"] > 0)
    groups = per_image.groupby(["configuration", "target", "label"])
    band = groups[["ratio", "cortex/soft"]].agg(["mean", "count"])
    # the images' maps pooled: all their CAM mass on the cortex over all of it on the soft tissue
    # (the mean of per-image ratios runs away where one image's soft-tissue mass is near 0)
    sums = groups[["cortex", "soft"]].sum()
    band[("cortex/soft", "pooled")] = sums["cortex"] / sums["soft"].where(sums["soft"] > 0)
    band = band.unstack("label")
    band.columns = [f"{'band ' if a == 'ratio' else ''}{a} {s} ({'osteoporosis' if b else 'normal'})"
                    for a, s, b in band.columns]
    band = band.drop(columns=[c for c in band.columns if c.startswith("cortex/soft count")])
    band = band.reset_index()
    band = band.assign(_o=band["configuration"].map({c: i for i, c in enumerate(order)})).sort_values(
        ["_o", "target"], ascending=[True, False]).drop(columns="_o")
    tables = {"gradcam_border_band": band}
    if occl:
        tables.update(occlusion=pd.DataFrame(occl), occlusion_images=pd.concat(occl_images, ignore_index=True))
    return files, tables, note


def _with_anatomy(mdf: pd.DataFrame, cfg: DictConfig) -> tuple[pd.DataFrame, list[dict]]:
    """The manifest rows with the mandible finder's box, status and MCW (from the ROI cache the
    runs used; found again where it is missing). Unchanged when the runs used a fixed box."""
    if cfg.data.roi.get("placement", "fixed") != "auto" or "anatomy" not in cfg.data:
        return mdf, []
    from osteo.data.cache import build_roi_cache

    places: list[dict] = []
    build_roi_cache(mdf, OmegaConf.to_container(cfg.data.roi, resolve=True), cfg.data.cache_dir, progress=False,
                    anatomy=OmegaConf.to_container(cfg.data.anatomy, resolve=True), placements_out=places)
    p = pd.DataFrame(places, index=mdf.index)
    return mdf.assign(box_x0=p["roi_x0"], box_y0=p["roi_y0"], roi_status=p["status"], mcw_mm=p["mcw_mm"]), places


def fusion_comparisons(runs: pd.DataFrame, order: list[str], all_summ: dict, ens: dict,
                       mdf: pd.DataFrame, splits: pd.DataFrame, cfg0: DictConfig, rcfg: DictConfig
                       ) -> tuple[pd.DataFrame, list[str]]:
    """Paired tests of each fusion configuration against its image-only twin (same backbone,
    depth and weights, where it was run) and against its covariates alone (logistic regression
    on the same folds; added to ``all_summ`` and ``ens``, so Table 2 shows it), and one answer
    per question. Returns (table, answers); both empty without fusion runs."""
    from osteo.data.covariates import covariate_matrix

    fused = {label: runs.loc[runs["config"] == label, "covariates"].iloc[0] for label in order}
    fused = {k: v for k, v in fused.items() if v}
    if not fused:
        return pd.DataFrame(), []
    pairs, kinds, asks = [], {}, {}
    for label, covs in fused.items():
        names = covs.split(",")
        alone = BASELINE if names == ["age", "sex"] else f"{' + '.join(names)} (logistic regression)"
        if alone not in ens:
            raw = covariate_matrix(mdf, names)
            s, p, _ = logistic_baseline(mdf, splits, int(cfg0.data.split.n_folds),
                                        {n: pd.Series(raw[:, k], index=mdf.index) for k, n in enumerate(names)},
                                        " + ".join(names), float(rcfg.sensitivity_target))
            all_summ[alone], ens[alone] = s, p
        pairs.append((label, alone))
        kinds[(label, alone)] = f"image adds to {' + '.join(names)}"
        asks[(label, alone)] = f"Does the image add to {' + '.join(names)}?"
        extra = runs.loc[runs["config"] == label, "settings"].iloc[0]  # ' [key=value, ...]' or ''
        twin = label[: len(label) - len(extra)].split(" + ")[0] + extra
        if twin in ens:
            pairs.append((label, twin))
            kinds[(label, twin)] = f"{' + '.join(names)} add to the image"
            asks[(label, twin)] = f"Do {' + '.join(names)} add to the image?"
    tab = paired_comparisons(ens, order[0], pairs).rename(
        columns={"vs": "fusion", "configuration": "alone", "AUC best": "AUC fusion", "AUC other": "AUC alone"})
    tab.insert(0, "question", [kinds[(f, a)] for f, a in zip(tab["fusion"], tab["alone"])])
    answers = []
    for r in tab.to_dict("records"):
        yes = bool(r["significant at 0.05"]) and r["difference"] > 0  # significant, in fusion's favour
        answers.append(f"{asks[(r['fusion'], r['alone'])]} {'Yes' if yes else 'Not shown'} (Holm-corrected "
                       f"paired test at 0.05): {r['fusion']} {r['AUC fusion']:.3f} against {r['alone']} {r['AUC alone']:.3f}, "
                       f"difference {r['difference']:+.3f}, p = {r['p']:.3g} (Holm {r['p (Holm)']:.3g}), "
                       f"{r['n_images']} test images.")
    return tab, answers


def methods_text(cfg: DictConfig, runs: pd.DataFrame) -> str:
    """A short methods paragraph generated from a run's config."""
    d = cfg.data
    data = (f"the manifest {d.manifest}" if d.manifest else
            f"{d.phantom.n} synthetic DPR phantoms (osteo's generator, seed {d.phantom.seed}, difficulty "
            f"{d.phantom.difficulty}, framing spread {d.phantom.framing_spread})")
    split = (f"{d.split.test_per_class} test images per class" if d.split.test_per_class is not None
             else f"a stratified {d.split.test_fraction:.0%} test set")
    rule = f"T-score {'<=' if d.label.inclusive else '<'} {d.label.threshold}"
    patience = OmegaConf.select(cfg, "callbacks.early_stopping.patience", default=None)
    stopping = f"early stopping on validation AUC (patience {patience})" if patience else "no early stopping"
    return (f"Data: {data}; osteoporosis when {rule}. Each DPR was resized bilinearly to "
            f"{d.roi.resize_wh[0]}x{d.roi.resize_wh[1]} (W x H) and the ROI box (x0, y0, w, h) = "
            f"{tuple(d.roi.box_xywh)} cropped" + (f" and scaled by {d.roi.scale}" if d.roi.scale != 1 else "") +
            f". Split (seed {d.split.seed}, patient-level): {split} held out, then {d.split.n_folds}-fold "
            f"stratified group cross-validation of the rest. Training: {cfg.model.optimizer._target_.split('.')[-1]} "
            f"lr {cfg.model.optimizer.lr}, batch {d.batch_size}, up to {cfg.trainer.max_epochs} epochs with "
            f"{stopping}, best checkpoint by validation AUC, seed {cfg.seed}. {len(runs)} finished runs. The test "
            f"set was scored once per run and never used for any choice: thresholds come from out-of-fold "
            f"validation predictions and the best configuration is the one with the highest mean validation AUC.")


def provenance_lines(runs: pd.DataFrame) -> list[str]:
    """The distinct software/device records of the runs, one line each, with their run counts."""
    from osteo.provenance import provenance_line

    out = []
    for prov, n in runs["provenance"].value_counts().items():
        p = json.loads(prov)
        out.append((provenance_line(p) if p else "not recorded (runs made before osteo 0.2)") + f" [{n} run(s)]")
    return out


def _table_html(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    return df.to_html(index=False, float_format=lambda v: floatfmt.format(v), border=0, classes="t", na_rep="n/a")


def _where_runs_are(runs_dir: Path) -> str:
    """What to do when ``runs_dir`` holds no finished run: point at finished runs beside it, single
    runs (``python -m osteo.train`` without a sweep writes them under runs/, not sweeps/) first."""
    singles = runs_dir.parent / "runs"
    n = len(list(singles.glob("*/*/metrics.json"))) if singles != runs_dir else 0
    if n:
        return (f"; {n} finished single run(s) (python -m osteo.train without +sweep or -m) are under {singles}: "
                f"report them with report.runs_dir={singles}")
    elsewhere = sorted({str(p.parents[2]) for p in runs_dir.parent.glob("*/sweeps/*/*/*/metrics.json")})
    if elsewhere:
        return f"; finished runs are under {elsewhere[0]}: for the demo use python -m osteo.report experiment=demo"
    return "; train first (python -m osteo.train +sweep=...), or set report.runs_dir"


def build_report(runs_dir: str | Path, out_dir: str | Path, rcfg: DictConfig, command: str = "") -> dict:
    """Write the report (index.html, tables as CSV, figures as PNG) into ``out_dir``; return a
    summary. Runs of different data sets (manifest, split file, or the manifest's content or the
    phantom generator where the runs recorded them) are never merged: each data set gets its own
    report in ``out_dir/data-N/`` and index.html lists them."""
    runs_dir, out = Path(runs_dir), Path(out_dir)
    occlusion_fills(rcfg)  # a bad setting stops the report before it writes anything
    runs, preds, problems = load_runs(runs_dir)
    if not len(runs):
        from osteo.cli import UserError

        failed = sum(p["status"] == "failed" for p in problems)
        raise UserError(f"no finished runs under {runs_dir}" + (f" ({failed} failed)" if failed else "")
                        + _where_runs_are(runs_dir))
    _check_data_files(runs)
    with staged_folder(out) as stage:  # a report that fails or is interrupted changes nothing in out
        return _build_all(runs, preds, problems, runs_dir, stage, rcfg, command)


def _build_all(runs: pd.DataFrame, preds: dict, problems: list[dict], runs_dir: Path, out: Path,
               rcfg: DictConfig, command: str) -> dict:
    """The report of every data set's runs into ``out`` (one data set: out itself)."""
    groups = list(runs.groupby("data", sort=True))
    if len(groups) == 1:
        return _build_one(runs, preds, problems, out, rcfg, command)
    entries, summaries = [], {}
    for i, (data, g) in enumerate(groups, start=1):
        name = f"data-{i}"
        own = [p for p in problems if p.get("data") in (None, data)]
        s = _build_one(g, preds, own, out / name, rcfg, command)
        summaries[name] = s
        entries.append({"name": name, "href": f"{name}/index.html", "manifest": g["manifest"].iloc[0],
                        "splits": g["splits"].iloc[0], "content": g["content"].iloc[0] or "not recorded",
                        "runs": len(g), "best": s.get("best", "")})
        log.warning("runs under %s used %d data sets; report %s: %s", runs_dir, len(groups), name, data)
    page = _env().get_template("index.html.j2").render(runs_dir=str(runs_dir), reports=entries)
    atomic_write_text(out / "index.html", page)
    summary = {"reports": entries, "by_data": summaries, "configs": {}, "missing": problems}
    atomic_write_json(out / "summary.json", summary)
    return summary


def _check_data_files(runs: pd.DataFrame) -> None:
    """A UserError, before anything is written, naming the first run of a data set whose
    manifest or split file (as its metrics.json records them) is not there to read."""
    for _, g in runs.groupby("data", sort=True):
        first = g.iloc[0]
        for what in ("manifest", "splits"):
            if not first[what] or not Path(first[what]).is_file():
                from osteo.cli import UserError

                raise UserError(f"{first['dir']}: its {'split file' if what == 'splits' else what} "
                                f"{first[what]} is not there; run the report from the folder the runs were "
                                "trained in, or put the file back")


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)),
                              autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)


def _src(out: Path, name: str, embed: bool) -> str:
    """An <img> source: the file name, or the PNG embedded as a data URI (self-contained page)."""
    if not embed:
        return name
    return "data:image/png;base64," + base64.b64encode((out / name).read_bytes()).decode("ascii")


def _build_one(runs: pd.DataFrame, preds: dict, problems: list[dict], out: Path, rcfg: DictConfig,
               command: str) -> dict:
    """The report of one data set's runs."""
    from osteo.checkpoints import run_config
    from osteo.data.describe import table1
    from osteo.data.manifest import load_manifest

    out.mkdir(parents=True, exist_ok=True)
    missing = pd.DataFrame(problems, columns=["run", "status", "detail"])
    atomic_write_csv(out / "missing_runs.csv", missing)
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
    cfg0 = run_config(first["dir"])
    mdf = load_manifest(first["manifest"], cfg0.data.label.threshold, cfg0.data.label.inclusive)
    splits = pd.read_csv(first["splits"], dtype={"patient_id": str, "part": str})
    mdf = mdf[mdf["image_rel"].isin(splits["image"])]
    notes = []
    base, base_pred, base_note = clinical_baseline(mdf, splits, int(cfg0.data.split.n_folds),
                                                   float(rcfg.sensitivity_target))
    notes.append(base_note + ".")
    all_summ = dict(summaries)
    if base is not None:
        all_summ[BASELINE] = base
        ens[BASELINE] = base_pred
    mdf, places = _with_anatomy(mdf, cfg0)
    mcw, mcw_pred, mcw_note = mcw_baseline(mdf, splits, int(cfg0.data.split.n_folds), float(rcfg.sensitivity_target))
    notes.append(mcw_note + ".")
    if mcw is not None:
        all_summ[MCW_BASELINE] = mcw
        ens[MCW_BASELINE] = mcw_pred
    t1 = table1(mdf)
    t2 = table2(all_summ)
    comps = paired_comparisons(ens, best)
    # pretrained against random init at the same backbone and depth, where both were run
    by_key = {}
    for label in order:
        a = attrs.loc[label]
        if a["covariates"]:  # fusion models are compared in their own table
            continue
        by_key.setdefault((a["backbone"], int(a["depth"])), {})[bool(a["pretrained"])] = label
    pairs = [(v[True], v[False]) for v in by_key.values() if True in v and False in v]
    init_comps = paired_comparisons(ens, best, pairs).rename(
        columns={"configuration": "random init", "vs": "pretrained", "AUC best": "AUC pretrained",
                 "AUC other": "AUC random init"}) if pairs else pd.DataFrame()
    fusion, fusion_answers = fusion_comparisons(runs, order, all_summ, ens, mdf, splits, cfg0, rcfg)
    if len(fusion):
        atomic_write_csv(out / "fusion_tests.csv", fusion)
        notes.append("Fusion: " + " ".join(fusion_answers))
    atomic_write_csv(out / "table1.csv", t1.reset_index().rename(columns={"index": "parameter"}))
    atomic_write_csv(out / "table2.csv", t2)
    atomic_write_csv(out / "table2_raw.csv", pd.DataFrame(all_summ).T.reset_index(names="configuration"))
    atomic_write_csv(out / "paired_tests.csv", comps)
    if len(init_comps):
        atomic_write_csv(out / "pretrained_vs_random.csv", init_comps)

    figs = []

    def add(path: Path, title: str, caption: str) -> None:
        figs.append({"file": path.name, "title": title, "caption": caption})

    aucs = {k: (summaries[k]["auc_mean"], summaries[k]["auc_sd"]) for k in order}
    add(figures.curves_figure(folds, out / "roc.png", "roc", aucs), "Mean ROC curves over folds",
        "Test-set ROC of each configuration's fold models, interpolated on a common false-positive-rate grid "
        "and averaged; the band is ±1 SD over folds. Legend: fold-mean AUC ± SD.")
    add(figures.curves_figure(folds, out / "pr.png", "pr"), "Mean precision-recall curves over folds",
        "Test-set precision against recall (sensitivity) of each configuration's fold models, averaged on a "
        "common recall grid; the band is ±1 SD over folds.")
    add(figures.auc_vs_params(summaries, out / "auc_vs_params.png"), "Test AUC against trainable parameters",
        "Fold-mean test AUC (± SD) of each configuration against its number of trainable parameters "
        "(log scale), as the thesis's Figure 7.")
    same_backbone = attrs[(attrs["backbone"] == attrs.loc[best, "backbone"]) & (attrs["covariates"] == "")]
    pre = list(same_backbone.index[same_backbone["pretrained"].astype(bool)])
    group = pre if len(pre) > 1 else list(same_backbone.index)
    if len(group) > 1:
        depths = [int(attrs.loc[k, "depth"]) for k in group]
        add(figures.auc_by_depth(depths, [summaries[k] for k in group], out / "auc_by_depth.png"),
            f"Test AUC by fine-tune depth ({attrs.loc[best, 'backbone']})",
            "Fold-ensemble test AUC with DeLong's 95% CI (circles) and the fold models' mean ± SD (squares) "
            "for each number of trained blocks N (TF N).")
    add(figures.reliability(ens[best]["label"], ens[best]["prob"], out / "reliability.png",
                            int(rcfg.calibration_bins), f"{best}: fold ensemble on test"),
        f"Reliability diagram of {best}",
        f"Observed osteoporosis rate against the mean predicted probability in {int(rcfg.calibration_bins)} "
        "equal-width bins of the fold ensemble's test probabilities; numbers are images per bin; the dashed "
        "line is perfect calibration.")
    if places:
        n_flag = sum(p["status"].startswith("flagged") for p in places)
        order_ = sorted(range(len(places)), key=lambda i: not places[i]["status"].startswith("flagged"))
        pick = order_[: int(rcfg.box_sheet_images)]
        caps = [f"{Path(mdf['image_rel'].iloc[i]).name}  {places[i]['status'][:48]}"
                + (f"  MCW {places[i]['mcw_mm']:.2f} mm" if places[i]["mcw_mm"] == places[i]["mcw_mm"] else "")
                for i in pick]
        from osteo.anatomy.sheet import placement_sheet

        add(placement_sheet([mdf["image"].iloc[i] for i in pick], [places[i] for i in pick], caps,
                            cfg0.data.roi.resize_wh, cfg0.data.roi.box_xywh[2:], out / "roi_boxes.png"),
            "Placed ROI boxes",
            f"The ROI box the mandible finder placed (cyan; red: flagged) and the traced inferior border (green) "
            f"on {len(pick)} images, the {n_flag} flagged one(s) of {len(places)} first "
            f"(data.roi.flagged={cfg0.data.roi.get('flagged', 'skip')}).")
    cam_files, cam_tables, cam_note = [], {}, "Grad-CAM disabled (report.gradcam.enabled=false)."
    if rcfg.gradcam.enabled:
        pre = [k for k in order if bool(attrs.loc[k, "pretrained"]) and not attrs.loc[k, "covariates"]]
        shown = (max(pre, key=lambda k: summaries[k]["val_auc_mean"]) if pre and rcfg.gradcam.pretrained_first
                 else best)  # the galleries show the best pretrained model where there is one
        cam_files, cam_tables, cam_note = _gradcam_section(shown, runs, ens[shown],
                                                           summaries[shown]["ens_threshold"], rcfg, out, order)
        for name, table in cam_tables.items():
            atomic_write_csv(out / f"{name}.csv", table)
    band, occl = cam_tables.get("gradcam_border_band"), cam_tables.get("occlusion")
    embed = bool(rcfg.get("self_contained", False))
    for i, f in enumerate(figs + cam_files, start=1):
        f["number"], f["src"] = i, _src(out, f["file"], embed)
    sections = [("methods", "Methods"), ("table1", "Table 1: demographics"), ("table2", "Table 2: models"),
                ("paired", "Paired comparisons"), ("figures", "Figures"), ("gradcam", "Grad-CAM"),
                ("missing", "Missing, failed or unfinished runs")]
    page = _env().get_template("report.html.j2").render(
        title="osteo: osteoporosis screening from dental panoramic radiographs",
        sections=[{"id": i, "title": s} for i, s in sections], figure_width=int(rcfg.get("figure_width", 560)),
        methods=methods_text(cfg0, runs), decision_rule=DECISION_RULE, provenance=provenance_lines(runs),
        command=command, table1=t1.to_html(border=0, classes="t"), table2=_table_html(t2), notes=notes,
        best=best, paired=_table_html(comps, "{:.4f}") if len(comps) else "", figures=figs,
        init_paired=_table_html(init_comps, "{:.4f}") if len(init_comps) else "",
        fusion=_table_html(fusion, "{:.4f}") if len(fusion) else "", fusion_answers=fusion_answers,
        cam_note=cam_note, cam_figures=cam_files, band=_table_html(band, "{:.2f}") if band is not None else "",
        occlusion=_table_html(occl, "{:.3g}") if occl is not None else "",
        missing=_table_html(missing) if len(missing) else "")
    atomic_write_text(out / "index.html", page)
    summary = {"best": best, "configs": all_summ, "missing": problems, "figures": [f["file"] for f in figs],
               "gradcam": [f["file"] for f in cam_files], "reports": []}
    atomic_write_json(out / "summary.json", summary)
    return summary


def command_line() -> str:
    return " ".join(["python -m osteo.report"] + [shlex.quote(a) for a in sys.argv[1:]])
