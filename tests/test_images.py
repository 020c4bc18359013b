import numpy as np
import pytest
from PIL import Image, ImageOps
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from osteo.data.images import EXIF_ORIENTATION, ImageReadError, image_size, read_gray, window_to_uint8


def ramp(h=40, w=60, hi=255):
    return (np.arange(h * w).reshape(h, w) * hi / (h * w - 1)).astype(np.float64)


def write_dicom(path, arr: np.ndarray, mono1=False, slope=1.0, intercept=0.0, window=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "PX"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = arr.astype(np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)


def test_8bit_formats_read_identically(tmp_path):
    a = ramp().astype(np.uint8)
    for ext in ("png", "bmp", "tif"):
        Image.fromarray(a).save(tmp_path / f"a.{ext}")
        assert np.array_equal(read_gray(tmp_path / f"a.{ext}"), a), ext
    Image.fromarray(a).save(tmp_path / "a.jpg", quality=100)
    assert np.abs(read_gray(tmp_path / "a.jpg").astype(int) - a).max() <= 3


@pytest.mark.parametrize("ext", ["jpg", "tif", "png"])
def test_exif_orientation_is_applied_as_viewers_apply_it(tmp_path, ext):
    """A DPR stored with an EXIF orientation (sideways: 6 or 8, as a camera or scanner may write
    it) is read as a viewer shows it: every orientation 1-8 as Pillow's exif_transpose turns it,
    the header size to match."""
    stored = np.random.default_rng(0).integers(0, 256, (64, 24)).astype(np.uint8)  # taller than wide
    for tag in range(1, 9):
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = tag
        f = tmp_path / f"o{tag}.{ext}"
        Image.fromarray(stored).save(f, exif=exif, **({"quality": 100, "subsampling": 0} if ext == "jpg" else {}))
        Image.fromarray(stored).save(tmp_path / "ref.png", exif=exif)
        shown = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "ref.png")))
        got = read_gray(f)
        assert got.shape == shown.shape and image_size(f) == shown.shape[::-1], (ext, tag)
        assert np.abs(got.astype(int) - shown).max() <= 3, (ext, tag)
    assert read_gray(tmp_path / f"o6.{ext}").shape == (24, 64)  # sideways storage reads wider than tall


def test_jpeg2000_and_webp_are_found_and_read_as_the_png(tmp_path):
    """JPEG 2000 (how some archives and PACS store radiographs; Pillow decodes it with
    OpenJPEG) and WebP, lossless, read exactly as the same pixels saved as PNG, 16-bit JPEG 2000
    windowed as a 16-bit PNG is; a folder of them is found."""
    from osteo.data.inputs import folder_images

    a = ramp().astype(np.uint8)
    Image.fromarray(a).save(tmp_path / "a.jp2")  # lossless (reversible 5/3 wavelet) by default
    Image.fromarray(a).save(tmp_path / "a.webp", lossless=True)
    for ext in ("jp2", "webp"):
        assert np.array_equal(read_gray(tmp_path / f"a.{ext}"), a), ext
    deep = (ramp(hi=4000) + 100).astype(np.uint16)
    Image.fromarray(deep).save(tmp_path / "d.jp2")
    Image.fromarray(deep).save(tmp_path / "d.png")
    assert np.array_equal(read_gray(tmp_path / "d.jp2"), read_gray(tmp_path / "d.png"))
    assert [f.name for f in folder_images(tmp_path)[0]] == ["a.jp2", "a.webp", "d.jp2", "d.png"]


def test_rgb_is_converted_to_luma(tmp_path):
    rgb = np.zeros((10, 10, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_gray(tmp_path / "c.png")[0, 0] == round(0.299 * 200)


def test_16bit_png_and_tiff_are_windowed_not_clipped(tmp_path):
    a16 = (ramp(hi=1) * 4000 + 1000).astype(np.uint16)  # values 1000..5000, all above 255
    expect = window_to_uint8(a16)
    Image.fromarray(a16).save(tmp_path / "a16.png")
    import tifffile

    tifffile.imwrite(tmp_path / "a16.tif", a16)
    for f in ("a16.png", "a16.tif"):
        g = read_gray(tmp_path / f)
        assert g.dtype == np.uint8 and g.min() == 0 and g.max() == 255
        assert np.array_equal(g, expect), f
        assert len(np.unique(g)) > 200  # a real ramp, not a clipped plateau


def test_dicom_rescale_and_monochrome1_inversion(tmp_path):
    raw = (ramp(hi=1) * 3000).astype(np.uint16)
    write_dicom(tmp_path / "m2.dcm", raw, slope=2.0, intercept=-100)
    write_dicom(tmp_path / "m1.dcm", raw, mono1=True, slope=2.0, intercept=-100)
    m2, m1 = read_gray(tmp_path / "m2.dcm"), read_gray(tmp_path / "m1.dcm")
    assert np.array_equal(m2, window_to_uint8(raw * 2.0 - 100))
    assert np.abs(m1.astype(int) - (255 - m2.astype(int))).max() <= 1  # inverted: bone bright


def test_dicom_voi_window_is_applied(tmp_path):
    raw = (ramp(hi=1) * 4000).astype(np.uint16)
    write_dicom(tmp_path / "w.dcm", raw, window=(1000, 400))
    g = read_gray(tmp_path / "w.dcm")
    assert g[0, 0] == 0 and g[-1, -1] == 255
    inside = (raw > 850) & (raw < 1150)
    assert len(np.unique(g[inside])) > 50  # the window stretches its range over 0..255


def transcode(src, dst, syntax: str) -> None:
    """Write DICOM ``src`` to ``dst`` compressed with GDCM's transfer syntax ``syntax``."""
    import gdcm

    r = gdcm.ImageReader()
    r.SetFileName(str(src))
    assert r.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(r.GetImage())
    assert change.Change()
    w = gdcm.ImageWriter()
    w.SetFileName(str(dst))
    w.SetFile(r.GetFile())
    w.SetImage(change.GetOutput())
    assert w.Write()


@pytest.mark.parametrize("syntax", ["JPEGLosslessProcess14_1", "JPEGLSLossless", "JPEG2000Lossless"])
def test_compressed_dicom_reads_as_the_uncompressed(tmp_path, syntax):
    """PACS exports often store DPRs compressed (JPEG lossless above all), which pydicom decodes
    only with a plugin: each lossless syntax reads exactly as the uncompressed file."""
    import pydicom

    a = np.random.default_rng(0).integers(0, 4000, (60, 90)).astype(np.uint16)
    write_dicom(tmp_path / "plain.dcm", a)
    transcode(tmp_path / "plain.dcm", tmp_path / "packed.dcm", syntax)
    assert pydicom.dcmread(tmp_path / "packed.dcm", stop_before_pixels=True).file_meta.TransferSyntaxUID.is_compressed
    assert np.array_equal(read_gray(tmp_path / "packed.dcm"), read_gray(tmp_path / "plain.dcm"))


def test_undecodable_dicom_compression_is_named(tmp_path):
    """Without a decoder for its compression (a fresh process with the plugins hidden, as on a
    machine without them), the error is one line naming the file, the compression and what to
    export instead."""
    import subprocess
    import sys

    a = np.random.default_rng(0).integers(0, 4000, (60, 90)).astype(np.uint16)
    write_dicom(tmp_path / "plain.dcm", a)
    transcode(tmp_path / "plain.dcm", tmp_path / "packed.dcm", "JPEGLSLossless")
    code = ("import sys\n"
            "for m in ('gdcm', 'pylibjpeg', 'libjpeg', 'jpeg_ls', 'openjpeg'): sys.modules[m] = None\n"
            "from osteo.data.images import ImageReadError, read_gray\n"
            "try:\n    read_gray(sys.argv[1])\nexcept ImageReadError as e:\n    print(e)\n")
    msg = subprocess.run([sys.executable, "-c", code, str(tmp_path / "packed.dcm")], capture_output=True,
                         text=True, timeout=120).stdout.rstrip("\n")
    assert msg.startswith(f"{tmp_path / 'packed.dcm'}: its pixel data is compressed as 'JPEG-LS Lossless Image "
                          "Compression', which cannot be decoded here"), msg
    assert len(msg.splitlines()) == 1 and msg.endswith("export it uncompressed, or as JPEG lossless, JPEG-LS or JPEG 2000")


def test_unreadable_and_missing_files_name_the_file(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image at all")
    with pytest.raises(ImageReadError, match="broken.png"):
        read_gray(bad)
    with pytest.raises(ImageReadError, match="nothere.png: file not found"):
        read_gray(tmp_path / "nothere.png")
