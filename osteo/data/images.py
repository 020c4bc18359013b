"""Reading radiographs of any common format into 8-bit greyscale arrays.

Supported: PNG, JPEG, BMP, TIFF, JPEG 2000 and WebP (8- and 16-bit grey, RGB converted to grey) and DICOM,
uncompressed or compressed as PACS exports store them (JPEG lossless, JPEG-LS, JPEG 2000, RLE:
decoded by GDCM, Pillow or pydicom itself).

16-bit rule (documented in the README): high-bit-depth data is mapped linearly to 0..255
from its own window. For DICOM that window is the file's VOI LUT / window centre-width when
present (the window the modality chose for display); otherwise, and for 16-bit PNG/TIFF, the
image's own min..max (``window="minmax"``, nothing is clipped) or its 0.5..99.5 percentiles
(``window="percentile"``, robust to burned-in markers).

A file's EXIF orientation (JPEG, TIFF, PNG) is applied, as image viewers apply it: a DPR that a
viewer shows upright is read upright.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 5-8 turn the image by 90 degrees
DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".jp2", ".j2k", ".webp"} | DICOM_SUFFIXES


class ImageReadError(ValueError):
    """A file that cannot be read as a radiograph; the message names the file and the reason."""


def window_to_uint8(arr: np.ndarray, window: str = "minmax",
                    lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map an array of any numeric type linearly to uint8 (H x W).

    ``lo``/``hi`` fix the window; otherwise it comes from ``window``: ``"minmax"`` (the data's
    range) or ``"percentile"`` (0.5..99.5 %). A constant image maps to zeros.
    """
    a = np.asarray(arr, dtype=np.float64)
    if lo is None or hi is None:
        if window == "minmax":
            lo, hi = float(a.min()), float(a.max())
        elif window == "percentile":
            lo, hi = (float(v) for v in np.percentile(a, [0.5, 99.5]))
        else:
            raise ValueError(f"unknown window rule {window!r}: use 'minmax' or 'percentile'")
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    out = (a - lo) * (255.0 / (hi - lo))
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def is_dicom(path: Path) -> bool:
    """True when the file has a DICOM suffix or the 'DICM' preamble marker."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
        return len(head) == 132 and head[128:132] == b"DICM"
    except OSError:
        return False


def _read_dicom(path: Path, window: str) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(str(path))
    try:
        arr = ds.pixel_array
    except (RuntimeError, NotImplementedError, ValueError) as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if ts is not None and ts.is_compressed:
            raise ImageReadError(f"{path}: its pixel data is compressed as {ts.name!r}, which cannot be decoded here "
                                 f"({str(e).splitlines()[0]}); export it uncompressed, or as JPEG lossless, JPEG-LS "
                                 "or JPEG 2000") from e
        raise
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # colour DICOM
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return window_to_uint8(arr, window)
    if arr.ndim != 2:
        raise ImageReadError(f"{path}: DICOM pixel data has shape {arr.shape}, expected one 2-D frame")
    arr = apply_modality_lut(arr, ds).astype(np.float64)  # rescale slope/intercept
    has_voi = "VOILUTSequence" in ds or "WindowCenter" in ds
    if has_voi:
        arr = apply_voi_lut(arr, ds).astype(np.float64)
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        arr = arr.max() + arr.min() - arr  # invert: bone bright, as in MONOCHROME2
    return window_to_uint8(arr, window)


def dicom_pixel_mm(path: str | Path) -> float | None:
    """Pixel size in mm at the patient of a DICOM file (the mean of row and column spacing), or
    None for other files and DICOMs without one. PixelSpacing is already at the patient;
    ImagerPixelSpacing is at the detector, larger by the beam's magnification (about 1.2-1.3 at a
    panoramic's focal trough), so it is divided by EstimatedRadiographicMagnificationFactor where
    the file gives one (DICOM PS3.3 C.8.11.1); without it, it is used as it is."""
    path = Path(path)
    if not is_dicom(path):
        return None
    import pydicom

    ds = pydicom.dcmread(str(path), stop_before_pixels=True)

    def mean_spacing(tag: str) -> float | None:
        v = getattr(ds, tag, None)
        if v is not None and len(v) >= 2 and float(v[0]) > 0 and float(v[1]) > 0:
            return (float(v[0]) + float(v[1])) / 2
        return None

    at_patient = mean_spacing("PixelSpacing")
    if at_patient is not None:
        return at_patient
    at_detector = mean_spacing("ImagerPixelSpacing")
    if at_detector is None:
        return None
    magnification = getattr(ds, "EstimatedRadiographicMagnificationFactor", None)
    try:
        m = float(magnification) if magnification is not None else None
    except (TypeError, ValueError):
        m = None
    return at_detector / m if m is not None and m > 0 else at_detector


def read_gray(path: str | Path, window: str = "minmax") -> np.ndarray:
    """Read one radiograph as a uint8 greyscale array of shape (H, W), turned as its EXIF
    orientation says a viewer shows it.

    Raises ``ImageReadError`` naming the file when it is missing, unreadable or not an image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    try:
        if is_dicom(path):
            return _read_dicom(path, window)
        with Image.open(path) as im:
            orientation = _exif_orientation(im)
            if im.format == "TIFF" and orientation != 1:  # Pillow's TIFF reader turns such files its own way
                return np.ascontiguousarray(_upright(_read_tiff(path, window), orientation))
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                return np.ascontiguousarray(_upright(window_to_uint8(np.asarray(im), window), orientation))
            if im.mode in ("P", "PA"):
                im = im.convert("RGB")
            gray = np.asarray(im if im.mode == "L" else im.convert("L"), dtype=np.uint8)  # ITU-R 601 luma
            return np.array(_upright(gray, orientation))  # a writable, contiguous copy
    except ImageReadError:
        raise
    except Exception as e:  # PIL, pydicom and tifffile raise many types
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                return _read_tiff(path, window)
            except Exception:
                pass
        raise ImageReadError(f"{path}: cannot be read as an image ({type(e).__name__}: {e})") from e


def _read_tiff(path: Path, window: str) -> np.ndarray:
    """A TIFF's pixels as stored, grey uint8 (H, W), by tifffile."""
    import tifffile

    arr = tifffile.imread(str(path))
    if arr.ndim == 3:
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return arr.astype(np.uint8) if arr.dtype == np.uint8 else window_to_uint8(arr, window)


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) in pixels as ``read_gray`` returns the image, read from the header
    where possible."""
    path = Path(path)
    if is_dicom(path):
        import pydicom

        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
        return int(ds.Columns), int(ds.Rows)
    with Image.open(path) as im:
        orientation = _exif_orientation(im)
        # a TIFF's stored size from its tags: Pillow reports some turned TIFFs' size already turned
        w, h = (int(im.tag_v2[256]), int(im.tag_v2[257])) if im.format == "TIFF" else im.size
        return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _upright(gray: np.ndarray, orientation: int) -> np.ndarray:
    """A stored (H, W) array as a viewer shows it for EXIF ``orientation`` 1-8 (1: as stored;
    2: mirrored; 3: turned 180 degrees; 4: flipped; 5: transposed; 6: turned 90 degrees clockwise;
    7: transverse; 8: turned 90 degrees counter-clockwise)."""
    if orientation in (5, 6, 7, 8):
        gray = gray.T if orientation in (5, 7) else np.rot90(gray, -1 if orientation == 6 else 1)
        return gray[::-1, ::-1] if orientation == 7 else gray
    return {1: gray, 2: gray[:, ::-1], 3: gray[::-1, ::-1], 4: gray[::-1]}[orientation]


def _exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation of an open image (1: as stored; 2-8: mirrored and/or turned)."""
    try:
        o = int(im.getexif().get(EXIF_ORIENTATION, 1))
    except Exception:  # a damaged EXIF block: read the pixels as stored
        return 1
    return o if 1 <= o <= 8 else 1
