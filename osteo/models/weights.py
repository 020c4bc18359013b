"""The ``weights`` setting, parsed in one place.

``weights`` says where a backbone's initial weights come from:

- ``none`` (also ``false``, ``null``, empty): random initialisation;
- ``timm`` (also ``true``): timm's own pretrained weights, downloaded from its hub;
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


@dataclass(frozen=True)
class WeightsSpec:
    """A parsed ``weights`` value: ``kind`` is 'none', 'timm' or 'file'; ``path`` for files."""

    kind: str
    path: Path | None = None

    @property
    def pretrained(self) -> bool:
        return self.kind != "none"

    def tag(self) -> str:
        """A short, filesystem-safe name for run directories: 'scratch', 'timm' or
        '<file stem>-<8 hex of the absolute path>'."""
        if self.kind == "none":
            return "scratch"
        if self.kind == "timm":
            return "timm"
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.path.stem)[:40]
        return f"{stem}-{hashlib.sha1(str(self.path).encode()).hexdigest()[:8]}"

    def describe(self) -> str:
        """Human-readable, for logs and the report."""
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
    if not isinstance(value, (str, os.PathLike)):
        raise ValueError(f"weights={value!r}: use none, timm or a path to a .pth/.safetensors file")
    return WeightsSpec("file", Path(s).expanduser().resolve())
