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
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from osteo.data.images import IMAGE_SUFFIXES, ImageReadError, read_gray
from osteo.data.roi import check_source_size, extract_roi, resize_bilinear
from osteo.io import atomic_write_csv, atomic_write_text

log = logging.getLogger(__name__)

REFER, NO_REFER = "refer for DXA", "no referral"
DISCLAIMER = ("osteo is a screening aid, not a diagnosis: 'refer for DXA' means the radiograph "
              "suggests low bone density worth measuring with DXA.")


def find_inputs(inputs: list[str]) -> list[tuple[Path, tuple[int, int] | None]]:
    """(image file, ROI origin or None) from files, folders (recursively) and manifests (their
    'image' column, and 'roi_x0'/'roi_y0' where given)."""
    out: list[tuple[Path, tuple[int, int] | None]] = []
    for s in inputs:
        p = Path(s)
        if p.is_dir():
            out += [(q, None) for q in sorted(p.rglob("*")) if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES]
        elif p.suffix.lower() == ".csv":
            m = pd.read_csv(p, dtype=str, keep_default_na=False)
            if "image" not in m.columns:
                raise SystemExit(f"{p}: a manifest needs an 'image' column")
            for r in m.to_dict("records"):
                has_box = r.get("roi_x0", "") != "" and r.get("roi_y0", "") != ""
                out.append(((p.parent / r["image"]).resolve(),
                            (int(float(r["roi_x0"])), int(float(r["roi_y0"]))) if has_box else None))
        else:
            out.append((p, None))
    return out


def run_dirs_of_configuration(model: Path, config: str | None, single: bool) -> list[Path]:
    """The fold runs to ensemble for ``--model``/``--config``."""
    from osteo.runs import WEIGHTS_FILE, run_label

    def label(d: Path) -> str:
        return run_label(OmegaConf.load(d / "config.yaml"))

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
    runs = [d.parent for d in sorted(model.rglob(WEIGHTS_FILE)) if (d.parent / "config.yaml").exists()]
    if not runs:
        raise SystemExit(f"{model}: no finished runs ({WEIGHTS_FILE} + config.yaml) found")
    labels = {d: label(d) for d in runs}
    names = sorted(set(labels.values()))
    if config is None and len(names) > 1:
        raise SystemExit(f"{model} holds several configurations; pick one with --config: {', '.join(names)}")
    want = config or names[0]
    chosen = [d for d in runs if labels[d] == want]
    if not chosen:
        raise SystemExit(f"no configuration {want!r} under {model}; found: {', '.join(names)}")
    return chosen


def ensemble_threshold(run_dirs: list[Path]) -> float:
    """The decision threshold: Youden's on the runs' pooled out-of-fold validation predictions
    (one model's probability each), applied to each model's own probability (see osteo/runs.py)."""
    from osteo.runs import oof_thresholds

    frames = [pd.read_csv(d / "predictions.csv", dtype={"patient_id": str}) for d in run_dirs]
    return oof_thresholds(frames)["youden"]


def cam_overlay(gray: np.ndarray, cam: np.ndarray, roi: dict, box: list[int], out: Path) -> Path:
    """The resized DPR with the ROI box drawn and the Grad-CAM blended inside it (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import cm
    from PIL import Image, ImageDraw

    W, H = roi["resize_wh"]
    x0, y0, w, h = box
    base = np.stack([resize_bilinear(gray, (W, H))] * 3, axis=-1).astype(np.float32)
    heat = np.asarray(Image.fromarray((cam * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)) / 255.0
    colour = cm.jet(heat)[..., :3] * 255
    base[y0:y0 + h, x0:x0 + w] = 0.6 * base[y0:y0 + h, x0:x0 + w] + 0.4 * colour
    im = Image.fromarray(base.clip(0, 255).astype(np.uint8))
    ImageDraw.Draw(im).rectangle([x0, y0, x0 + w - 1, y0 + h - 1], outline=(255, 255, 0), width=2)
    im.save(out)
    return out


def predict(inputs: list[str], model: str, out: str, config: str | None = None, single: bool = False,
            batch_size: int = 8, cams: bool = True, device: str | None = None,
            progress: bool = True) -> pd.DataFrame:
    """Score images; returns the predictions table (also written to ``out``)."""
    from osteo.checkpoints import load_model, run_config
    from osteo.data.normalise import normalise
    from osteo.provenance import provenance, provenance_line
    from osteo.runs import vote

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model_path = Path(model)
    dirs = run_dirs_of_configuration(model_path, config, single)
    ckpt = model_path if model_path.is_file() else None
    models = [load_model(d, checkpoint=ckpt if ckpt else None, device=device)[0] for d in dirs]
    cfg = run_config(dirs[0])
    roi = OmegaConf.to_container(cfg.data.roi, resolve=True)
    mean, std = tuple(cfg.data.mean), tuple(cfg.data.std)
    prov = provenance_line(provenance("gpu" if str(device).startswith("cuda") else "cpu", "32-true"))
    thr = ensemble_threshold(dirs)
    out_dir = Path(out)
    (out_dir / "cams").mkdir(parents=True, exist_ok=True)
    files = find_inputs(inputs)
    rows: list[dict] = []
    batch: list[tuple[int, np.ndarray, np.ndarray, list[int]]] = []

    def flush():
        if not batch:
            return
        x = normalise(torch.from_numpy(np.stack([b[1] for b in batch]))[:, None].to(device), mean, std)
        with torch.inference_mode():
            per_model = torch.stack([m(x).float().softmax(1)[:, 1] for m in models]).cpu().numpy()
        probs = per_model.mean(0)
        refer, votes = vote(per_model, thr)
        maps = None
        if cams:
            from osteo.gradcam import grad_cams

            maps = np.mean([grad_cams(m, x) for m in models], axis=0)
            maps = maps / np.maximum(maps.max(axis=(1, 2), keepdims=True), 1e-8)
        for k, (i, _, gray, box) in enumerate(batch):
            r = rows[i]
            r.update(status="ok", probability=float(probs[k]), decision=REFER if refer[k] else NO_REFER,
                     models_referring=int(votes[k]))
            if maps is not None:
                r["cam_png"] = str(cam_overlay(gray, maps[k], roi, box, out_dir / "cams" / f"{i:05d}_{Path(r['image']).stem}.png"))
        batch.clear()

    for f, origin in tqdm(files, desc="screening", unit="img", disable=not progress):
        box = list(origin) + list(roi["box_xywh"][2:]) if origin else list(roi["box_xywh"])
        rows.append({"image": str(f), "status": "", "probability": np.nan, "decision": "",
                     "models_referring": np.nan, "threshold": thr, "cam_png": ""})
        try:
            gray = read_gray(f, roi.get("window", "minmax"))
            check_source_size(gray.shape[1], gray.shape[0], roi.get("min_source_wh", (0, 0)))
            batch.append((len(rows) - 1, extract_roi(gray, roi["resize_wh"], box, roi["scale"]), gray, box))
        except (ImageReadError, ValueError, OSError) as e:
            rows[-1]["status"] = f"error: {str(e).split(': ', 1)[-1] if isinstance(e, ImageReadError) else e}"
            log.warning("%s: %s", f, rows[-1]["status"])
        if len(batch) >= batch_size:
            flush()
    flush()
    df = pd.DataFrame(rows)
    df["models"] = len(models)
    df["model_dir"] = str(dirs[0].parent if len(dirs) > 1 else dirs[0])
    df["provenance"] = prov
    return df


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=DISCLAIMER)
    ap.add_argument("inputs", nargs="+", help="image files, folders (recursive) or manifest CSVs")
    ap.add_argument("--model", required=True, help="run directory, directory of runs, or best.ckpt")
    ap.add_argument("--config", help="configuration label when --model holds several (e.g. vgg16-TF2)")
    ap.add_argument("--single", action="store_true", help="use the given run only, no fold ensemble")
    ap.add_argument("--out", default="outputs/predict", help="output folder (default outputs/predict)")
    ap.add_argument("--json", action="store_true", help="also write predictions.json")
    ap.add_argument("--force", action="store_true", help="overwrite existing outputs")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-cam", action="store_true", help="skip the Grad-CAM overlays")
    a = ap.parse_args(argv)
    from osteo.cli import setup_logging

    setup_logging()
    out = Path(a.out)
    targets = [out / "predictions.csv"] + ([out / "predictions.json"] if a.json else [])
    existing = [str(t) for t in targets if t.exists()]
    if existing and not a.force:
        log.error("%s exists; pass --force to overwrite", ", ".join(existing))
        return 2
    df = predict(a.inputs, a.model, a.out, a.config, a.single, a.batch_size, not a.no_cam)
    atomic_write_csv(out / "predictions.csv", df)
    if a.json:
        atomic_write_text(out / "predictions.json", df.to_json(orient="records", indent=2))
    failed = int((df["status"] != "ok").sum())
    refer = int((df["decision"] == REFER).sum())
    log.info(f"{len(df) - failed} image(s) screened, {refer} to refer for DXA, {failed} failed "
             f"(threshold {df['threshold'].iloc[0]:.3f}, {df['models'].iloc[0]} model(s)); {out / 'predictions.csv'}")
    log.info(DISCLAIMER)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
