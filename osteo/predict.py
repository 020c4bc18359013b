"""Screen new dental panoramic radiographs with a trained configuration.

    python -m osteo.predict IMAGES_OR_FOLDERS_OR_MANIFEST... --model RUN_DIR [--out DIR]

``--model`` is a run directory (its sibling fold runs of the same configuration are
ensembled; ``--single`` uses that run alone), a directory of runs with ``--config LABEL``
(for example ``"vgg16 TF2, timm"``), or a run's ``best.safetensors`` file. Images are read and
pre-processed exactly as in training, with the ROI settings from the run's saved config.

Writes predictions.csv (and .json with --json): per image the probability of osteoporosis
(the fold models' mean), the decision ("refer for DXA" or "no referral": each fold model
compares its own probability with the threshold chosen on the out-of-fold validation
predictions, and the image is referred when at least half of the models refer; see
osteo/runs.py), the number of models that refer, and a Grad-CAM overlay PNG. This is a screening aid, not a diagnosis: a
referral means "measure bone density with DXA", nothing more.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from osteo.data.images import ImageReadError, read_gray
from osteo.anatomy.mandible import FLAGGED, analyse, border_array, pixel_size
from osteo.data.covariates import apply_transform, load_transform
from osteo.data.inputs import find_inputs, no_images_error
from osteo.data.roi import check_source_size, extract_roi, resize_bilinear
from osteo.cli import UserError
from osteo.io import atomic_write_csv, atomic_write_text, staged_folder

log = logging.getLogger(__name__)

REFER, NO_REFER = "refer for DXA", "no referral"
DISCLAIMER = ("osteo is a screening aid, not a diagnosis: 'refer for DXA' means the radiograph "
              "suggests low bone density worth measuring with DXA.")


def run_dirs_of_configuration(model: Path, config: str | None, single: bool) -> list[Path]:
    """The fold runs to ensemble for ``--model``/``--config``: a run's weights file or the run
    alone (``single``); a run and its sibling folds; or, under a folder of runs, the fold runs of
    one configuration as the report groups them (``osteo.runs.load_runs``: its label, with the
    settings that tell it apart, one data set, one run per fold, the newer where a fold is there
    twice)."""
    if not model.exists():
        raise UserError(f"--model {model}: not found; pass a run directory, a folder of runs or a run's "
                        "best.safetensors")
    from osteo.runs import WEIGHTS_FILE, load_runs   # after the check: it imports torchmetrics (seconds)

    def key(d: Path):
        c = OmegaConf.to_container(OmegaConf.load(d / "config.yaml"), resolve=False)
        c.pop("fold", None)
        c.get("data", {}).pop("fold", None)
        for k in ("run_dir", "cpus", "overwrite"):
            c.pop(k, None)
        for group in ("trainer", "callbacks", "logger"):
            c.pop(group, None)
        return json.dumps(c, sort_keys=True, default=str)

    if model.is_file():
        return [model.parent]
    if (model / "config.yaml").exists():
        if single:
            return [model]
        k = key(model)
        sibs = [d for d in sorted(model.parent.iterdir()) if (d / WEIGHTS_FILE).exists()
                and (d / "config.yaml").exists() and key(d) == k]
        return sibs or [model]
    runs, _, problems = load_runs(model)
    runs = runs[runs["checkpoint"].notna()] if len(runs) else runs
    if not len(runs):
        raise UserError(f"{model}: no finished runs ({WEIGHTS_FILE} + config.yaml) found; pass a run "
                        "directory, a folder of runs or a run's best.safetensors")
    names = sorted(set(runs["config"]))
    if config is None and len(names) > 1:
        raise UserError(f"{model} holds several configurations; pick one with --config: "
                        f"{'; '.join(repr(n) for n in names)}")
    want = config or names[0]
    chosen = runs[runs["config"] == want]
    if not len(chosen):
        raise UserError(f"no configuration {want!r} under {model}; found: {'; '.join(repr(n) for n in names)}")
    if chosen["data"].nunique() > 1:  # never one ensemble of models trained on different data
        folders = sorted({str(Path(d).parent) for d in chosen["dir"]})
        raise UserError(f"{want!r} under {model} was trained on {chosen['data'].nunique()} data sets; pass --model "
                        f"the folder of one of them: {'; '.join(folders)}")
    for p in problems:
        if p["status"] == "duplicate" and p["detail"].startswith(want + " fold "):
            log.warning("%s: %s", p["run"], p["detail"])
    return [Path(d) for d in chosen.sort_values("fold")["dir"]]


def ensemble_threshold(run_dirs: list[Path]) -> float:
    """The decision threshold: Youden's on the runs' pooled out-of-fold validation predictions
    (one model's probability each), applied to each model's own probability (see osteo/runs.py)."""
    from osteo.runs import ensemble_frames, oof_thresholds

    oof = ensemble_frames([pd.read_csv(d / "predictions.csv", dtype={"patient_id": str}) for d in run_dirs], "val")
    return oof_thresholds(oof["label"], oof["prob"])["youden"]


def cam_overlay(gray: np.ndarray, cam: np.ndarray, roi: dict, box: list[int], caption: list[str],
                out: Path, border: np.ndarray | None = None) -> Path:
    """The resized DPR with the ROI box (cyan) and the traced mandible border (green, float
    rows per resized column, NaN where not traced) drawn, a light Grad-CAM inside the box (the
    anatomy stays visible) and a caption band above it (probability, decision, flags); PNG or
    JPEG by suffix."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw

    from osteo.io import atomic_save_image

    W, H = roi["resize_wh"]
    x0, y0, w, h = box
    base = np.stack([resize_bilinear(gray, (W, H))] * 3, axis=-1).astype(np.float32)
    heat = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    colour = colormaps["inferno"](heat)[..., :3] * 255
    alpha = (0.45 * heat)[..., None]  # strongest where the map is hot, clear where it is cold
    hv = min(h, H - y0)  # a box may pass the image's bottom edge (placed at a low chin)
    base[y0:y0 + hv, x0:x0 + w] = (1 - alpha[:hv]) * base[y0:y0 + hv, x0:x0 + w] + alpha[:hv] * colour[:hv]
    band = 18 * len(caption) + 8
    im = Image.new("RGB", (W, H + band), (0, 0, 0))
    im.paste(Image.fromarray(base.clip(0, 255).astype(np.uint8)), (0, band))
    draw = ImageDraw.Draw(im)
    draw.rectangle([x0, y0 + band, x0 + w - 1, y0 + band + h - 1], outline=(0, 255, 255), width=2)
    if border is not None and np.isfinite(border).any():
        xs = np.flatnonzero(np.isfinite(border))
        draw.line([(int(x), float(border[x]) + band) for x in xs], fill=(0, 255, 0), width=1)
    for k, line in enumerate(caption):
        draw.text((8, 4 + 18 * k), line, fill=(255, 255, 255), font_size=15)
    return atomic_save_image(out, im, **({"quality": 90} if out.suffix == ".jpg" else {"compress_level": 1}))


def image_covariates(names: list[str], fields: dict) -> tuple[np.ndarray, list[str]]:
    """(raw covariate values float [k], NaN where missing; the names of the missing ones) of one
    image from its manifest row or command-line values ``fields``. An unreadable value raises
    ``CovariateError`` naming it and where it came from."""
    from osteo.data.covariates import CovariateError, parse_covariate, value_kind

    where = fields.get("_where", "the command line")
    vals = []
    for n in names:
        try:
            vals.append(parse_covariate(n, [fields.get(n, "")])[0])
        except CovariateError:
            raise CovariateError(f"{where}: covariate {n}={fields.get(n)!r} is not {value_kind(n)}") from None
    vals = np.asarray(vals, dtype=np.float64)
    return vals, [n for n, v in zip(names, vals) if v != v]


def _run_files(dirs: list[Path]) -> tuple[list[dict | None], list[dict]]:
    """Per run: its OOD detector (None for runs made before osteo 0.2) and what it was trained on."""
    from osteo import ood

    dets = [ood.load(d / "ood.safetensors") if (d / "ood.safetensors").exists() else None for d in dirs]
    trained = [json.loads((d / "metrics.json").read_text()).get("trained_on", {}) if (d / "metrics.json").exists()
               else {} for d in dirs]
    return dets, trained


def predict(inputs: list[str], model: str, out: str, config: str | None = None, single: bool = False,
            batch_size: int = 8, cams: bool = True, device: str | None = None,
            progress: bool = True, allow_phantom_model: bool = False, cam_format: str = "png",
            covariates: dict[str, str] | None = None, write_to: str | Path | None = None) -> pd.DataFrame:
    """Score images; returns the predictions table (the caller writes it).

    Columns: image, status ('ok', 'flagged: ...' or 'error: ...'), probability (the fold
    models' mean), decision, models_referring, threshold, ood_score (osteo.ood.score, the median
    over the models; above 1: unlike the training images), trained_on, cam_png, models,
    model_dir, provenance, and the ROI's placement: roi_x0, roi_y0 (resized pixels), placement
    (fixed, manifest, ok, or flagged: the reason the mandible's border was not found), MCW
    (mcw_left_mm, mcw_right_mm, mcw_mm) and pixel_mm where known. A fusion model reads its
    covariates (e.g. age, sex) from each image's manifest row, or from ``covariates`` (name ->
    value, for one image named directly); an image without them gets the status
    ``missing covariate(s): ...`` and no score (nothing is imputed), and the ``covariates``
    column shows the values used. No decision is given for a
    flagged image, nor for any image when the
    model was trained on phantoms, unless ``allow_phantom_model``. The Grad-CAM overlays are
    written under ``write_to``/cams (default ``out``) and named in the table under ``out``/cams:
    the command writes into a staging folder that becomes ``out`` when the screening is whole.
    """
    from osteo.config import outputs_root

    files = find_inputs(inputs, skip=[out, outputs_root()])   # never its own earlier overlays
    if not files:
        raise no_images_error(inputs)
    model_path = Path(model)
    dirs = run_dirs_of_configuration(model_path, config, single)

    from concurrent.futures import ThreadPoolExecutor   # the rest after the checks above (seconds of imports)

    from osteo import ood
    from osteo.checkpoints import load_model, run_config
    from osteo.data.normalise import normalise
    from osteo.gradcam import probs_cams_features
    from osteo.provenance import provenance, provenance_line
    from osteo.runs import vote

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    ckpt = model_path if model_path.is_file() else None
    models = [load_model(d, checkpoint=ckpt if ckpt else None, device=device)[0] for d in dirs]
    dets, trained = _run_files(dirs)
    cov_names = list(models[0].covariates)
    transforms = [load_transform(d) for d in dirs] if cov_names else []
    if covariates and not cov_names:
        log.warning("the model uses no covariates: %s ignored", ", ".join(covariates))
    if covariates and cov_names and len(files) > 1:
        raise UserError(f"--age/--sex/--covariate give one image's covariates, but {len(files)} images were named; "
                        "for several images use a manifest CSV with the columns " + ", ".join(cov_names))
    phantom_model = any(tr.get("kind") == "phantom" for tr in trained)
    trained_on = ("phantoms (synthetic images): not validated on real radiographs" if phantom_model
                  else ", ".join(sorted({f"{Path(tr.get('manifest', '?')).name} (sha1 {tr.get('sha1', '?')[:8]})"
                                         for tr in trained})) or "not recorded")
    if phantom_model:
        log.warning("=" * 78)
        log.warning("THIS MODEL WAS TRAINED ON SYNTHETIC PHANTOMS, NOT ON REAL RADIOGRAPHS.")
        log.warning("Its outputs on real images mean nothing clinically. %s",
                    "Decisions are given because --allow-phantom-model was passed." if allow_phantom_model
                    else "No referral decision is given (pass --allow-phantom-model to see one).")
        log.warning("=" * 78)
    decide = allow_phantom_model or not phantom_model
    cfg = run_config(dirs[0])
    roi = OmegaConf.to_container(cfg.data.roi, resolve=True)
    anatomy = (OmegaConf.to_container(cfg.data.anatomy, resolve=True)
               if roi.get("placement", "fixed") == "auto" and "anatomy" in cfg.data else None)
    mean, std = tuple(cfg.data.mean), tuple(cfg.data.std)
    prov = provenance_line(provenance("gpu" if str(device).startswith("cuda") else "cpu", "32-true"))
    thr = ensemble_threshold(dirs)
    out_dir, cam_dir = Path(out), Path(write_to if write_to is not None else out) / "cams"
    if cams:
        cam_dir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    batch: list[tuple[int, np.ndarray, np.ndarray, list[int]]] = []
    writers = ThreadPoolExecutor(max_workers=2)  # overlay encoding overlaps the next batch's forward pass
    pending = []

    def flush():
        if not batch:
            return
        x = normalise(torch.from_numpy(np.stack([b[1] for b in batch]))[:, None].to(device), mean, std)
        cs = [torch.from_numpy(apply_transform(np.stack([b[5] for b in batch]), t)).to(device) for t in transforms]
        outs = [probs_cams_features(m, x, cams, cs[j] if cs else None) for j, m in enumerate(models)]
        per_model = np.stack([o[0] for o in outs])
        probs = per_model.mean(0)
        refer, votes = vote(per_model, thr)
        scores = [ood.score(det, o[2]) for det, o in zip(dets, outs) if det is not None]
        ood_score = np.median(np.stack(scores), axis=0) if scores else np.full(len(batch), np.nan)
        maps = np.mean([o[1] for o in outs], axis=0) if cams else None
        for k, (i, _, gray, box, border, _c) in enumerate(batch):
            r = rows[i]
            flagged = bool(ood_score[k] > 1)
            misplaced = str(r["placement"]).startswith(FLAGGED)
            decision = (REFER if refer[k] else NO_REFER) if decide else "no decision: model trained on phantoms"
            if flagged:
                decision = "no decision: unlike the training images"
            status = f"flagged: unlike the training images (ood_score {ood_score[k]:.2f} > 1)" if flagged else "ok"
            if misplaced:  # the ROI may not hold the mandible's border: no decision on it
                why = f"ROI not placed ({r['placement'][len(FLAGGED):]})"
                decision = (decision + "; mandible border not found" if flagged
                            else "no decision: mandible border not found with confidence")
                status = status + "; " + why if flagged else FLAGGED + why
            r.update(status=status, probability=float(probs[k]), decision=decision, models_referring=int(votes[k]),
                     ood_score=float(ood_score[k]))
            if maps is not None:
                caption = [f"p(osteoporosis) = {probs[k]:.2f}   threshold {thr:.2f}   {votes[k]}/{len(models)} "
                           f"model(s) refer   decision: {decision}",
                           (f"FLAGGED: unlike the training images (ood_score {ood_score[k]:.2f})   " if flagged else "")
                           + (f"trained on: {trained_on}" if phantom_model else "") + "   screening aid, not a diagnosis"]
                name = f"{i:05d}_{Path(r['image']).stem}.{cam_format}"
                r["cam_png"] = str(out_dir / "cams" / name)
                pending.append(writers.submit(cam_overlay, gray, maps[k], roi, box, caption, cam_dir / name, border))
        batch.clear()

    try:
        for item in tqdm(files, desc="screening", unit="img", disable=not progress):
            f, origin, manifest_mm = item.path, item.origin, item.pixel_mm
            box = list(origin) + list(roi["box_xywh"][2:]) if origin else list(roi["box_xywh"])
            rows.append({"image": str(f), "status": "", "probability": np.nan, "decision": "",
                         "models_referring": np.nan, "threshold": thr, "ood_score": np.nan, "cam_png": "",
                         "roi_x0": box[0], "roi_y0": box[1], "placement": "manifest" if origin else "fixed",
                         "mcw_left_mm": np.nan, "mcw_right_mm": np.nan, "mcw_mm": np.nan, "pixel_mm": np.nan,
                         **({"covariates": ""} if cov_names else {})})
            try:
                gray = read_gray(f, roi.get("window", "minmax"))
                check_source_size(gray.shape[1], gray.shape[0], roi.get("min_source_wh", (0, 0)))
                border, overhang = None, 0
                if anatomy is not None:  # the run placed its boxes per image: so does screening
                    pix, src = pixel_size(f, manifest_mm, anatomy["mcw"]["pixel_mm"])
                    found = analyse(gray, roi, anatomy, pix)
                    border = border_array(found, roi["resize_wh"][0])
                    if not origin:
                        box = [found["roi_x0"], found["roi_y0"]] + list(roi["box_xywh"][2:])
                        overhang = int(anatomy["box"]["max_overhang_px"])
                    rows[-1].update(roi_x0=box[0], roi_y0=box[1], placement=found["status"] if not origin else "manifest",
                                    mcw_left_mm=found["mcw_left_mm"], mcw_right_mm=found["mcw_right_mm"],
                                    mcw_mm=found["mcw_mm"], pixel_mm=pix if src != "default" else np.nan)
                raw = None
                if cov_names:
                    raw, missing = image_covariates(cov_names, covariates or item.fields)
                    rows[-1]["covariates"] = ", ".join(f"{n}={('F' if v else 'M') if n == 'sex' else f'{v:g}'}"
                                                       for n, v in zip(cov_names, raw) if v == v)
                    if missing:
                        rows[-1]["status"] = (f"missing covariate(s): {', '.join(missing)}; give them in the manifest "
                                              f"or with {' '.join('--' + n if n in ('age', 'sex') else '--covariate ' + n + '=VALUE' for n in missing)}")
                        rows[-1]["decision"] = "no decision: covariates missing"
                        log.warning("%s: %s", f, rows[-1]["status"])
                        continue
                batch.append((len(rows) - 1, extract_roi(gray, roi["resize_wh"], box, roi["scale"], overhang), gray, box,
                              border, raw))
            except (ImageReadError, ValueError, OSError) as e:  # CovariateError is a ValueError
                rows[-1]["status"] = f"error: {str(e).split(': ', 1)[-1] if isinstance(e, ImageReadError) else e}"
                log.warning("%s: %s", f, rows[-1]["status"])
            if len(batch) >= batch_size:
                flush()
        flush()
        n_default = sum(1 for r in rows if r["placement"] not in ("fixed",) and not r["status"].startswith("error")
                        and r["pixel_mm"] != r["pixel_mm"] and r["mcw_mm"] == r["mcw_mm"])
        if n_default:
            log.warning("%d image(s) have no pixel size (no DICOM PixelSpacing, no manifest pixel_mm): their MCW uses "
                        "data.anatomy.mcw.pixel_mm = %s mm", n_default, anatomy["mcw"]["pixel_mm"])
        for p in pending:
            p.result()  # raises an encoding error here rather than losing it
    finally:
        writers.shutdown(wait=True)
    df = pd.DataFrame(rows)
    df["trained_on"] = trained_on
    df["models"] = len(models)
    df["model_dir"] = os.path.commonpath([str(d) for d in dirs])
    df["provenance"] = prov
    return df


def main(argv: list[str] | None = None) -> int:
    import time

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=DISCLAIMER)
    ap.add_argument("inputs", nargs="+", help="image files, folders (recursive) or manifest CSVs")
    ap.add_argument("--model", required=True, help="run directory, directory of runs, or a run's best.safetensors")
    ap.add_argument("--config", help='configuration label when --model holds several (e.g. "vgg16 TF2, timm")')
    ap.add_argument("--single", action="store_true", help="use the given run only, no fold ensemble")
    ap.add_argument("--out", default="outputs/predict", help="output folder (default outputs/predict)")
    ap.add_argument("--json", action="store_true", help="also write predictions.json")
    ap.add_argument("--force", action="store_true", help="overwrite existing outputs")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-cam", action="store_true", help="skip the Grad-CAM overlays")
    ap.add_argument("--cam-format", choices=("png", "jpg"), default="png", help="overlay format (jpg: smaller, faster)")
    ap.add_argument("--age", help="one image's age in years (for a model fused with covariates)")
    ap.add_argument("--sex", help="one image's sex, F or M (for a model fused with covariates)")
    ap.add_argument("--covariate", action="append", default=[], metavar="NAME=VALUE",
                    help="one image's other covariate, e.g. bmi=24.5 (repeatable)")
    ap.add_argument("--allow-phantom-model", action="store_true",
                    help="give referral decisions even with a model trained on synthetic phantoms (testing only)")
    a = ap.parse_args(argv)
    from osteo.cli import setup_logging

    setup_logging()
    if a.batch_size < 1:
        raise UserError(f"--batch-size {a.batch_size}: give 1 or more")
    out = Path(a.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {a.out} is a file; give a folder for predictions.csv and the overlays")
    targets = [out / "predictions.csv"] + ([out / "predictions.json"] if a.json else [])
    existing = [str(t) for t in targets if t.exists()]
    if existing and not a.force:
        raise UserError(f"{', '.join(existing)} exists; pass --force to overwrite it, or choose another --out")
    given = {k: v for k, v in (("age", a.age), ("sex", a.sex)) if v is not None}
    for item in a.covariate:
        if "=" not in item or not item.split("=", 1)[0].strip():
            raise UserError(f"--covariate {item!r}: write NAME=VALUE, e.g. --covariate bmi=24.5")
        k, v = item.split("=", 1)
        given[k.strip()] = v.strip()
    from osteo.data.covariates import CovariateError, parse_covariate, value_kind

    for k, v in given.items():
        try:
            parse_covariate(k, [v])
        except CovariateError:
            raise UserError(f"--{k if k in ('age', 'sex') else 'covariate ' + k} {v!r}: give {value_kind(k)}") from None
    t0 = time.perf_counter()
    # Written whole or not at all: the overlays and the table go to a staging folder beside --out,
    # moved in when the screening ends (the table last; an earlier run's cams/ replaced whole), so a
    # screening that fails or is interrupted leaves --out as it was.
    try:
        with staged_folder(out, last=("predictions.csv", "predictions.json"), replace=("cams",)) as stage:
            df = predict(a.inputs, a.model, a.out, a.config, a.single, a.batch_size, not a.no_cam,
                         allow_phantom_model=a.allow_phantom_model, cam_format=a.cam_format,
                         covariates=given or None, write_to=stage)
            seconds = time.perf_counter() - t0
            atomic_write_csv(stage / "predictions.csv", df)
            if a.json:
                atomic_write_text(stage / "predictions.json", df.to_json(orient="records", indent=2))
    except KeyboardInterrupt:
        print(f"osteo: interrupted: {out} is as it was before (this screening wrote nothing there)", file=sys.stderr)
        return 130
    stale = out / "predictions.json"
    if not a.json and a.force and stale.exists():  # the earlier screening's: it would contradict the new table
        stale.unlink()
        log.info("removed %s of an earlier screening (pass --json for a new one)", stale)
    failed = int(df["status"].str.startswith("error").sum())
    unscored = int(df["status"].str.startswith("missing covariate").sum())
    flagged = int(df["status"].str.startswith("flagged").sum())
    refer = int((df["decision"] == REFER).sum())
    log.info(f"{len(df) - failed - unscored} image(s) screened ({flagged} flagged: unlike the training images or ROI not placed), "
             f"{refer} to refer for DXA, {failed} failed, {unscored} without their covariates (threshold {df['threshold'].iloc[0]:.3f}, "
             f"{df['models'].iloc[0]} model(s)); {out / 'predictions.csv'}")
    log.info(f"{len(df) / seconds:.2f} images/s ({seconds:.1f} s, overlays {'off' if a.no_cam else 'on'})")
    log.info(DISCLAIMER)
    return 1 if failed or unscored else 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
