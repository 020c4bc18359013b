"""What produced a result: osteo's version and commit, the key libraries, device and precision.

Every run's metrics.json, every predict CSV and the report's methods paragraph carry this, so a
figure can be traced to the code and software that made it.
"""

from __future__ import annotations

import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import osteo

LIBRARIES = ("torch", "timm", "pytorch-lightning", "numpy")


def _git(*args: str) -> str | None:
    root = Path(osteo.__file__).resolve().parents[1]
    try:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


@lru_cache(maxsize=1)
def git_commit() -> tuple[str, bool | None]:
    """(commit, dirty) of the osteo source tree; ('unknown', None) for an installed wheel
    without VCS information. A pip install from a git URL records its commit too."""
    top = _git("rev-parse", "--show-toplevel")
    pkg_root = Path(osteo.__file__).resolve().parents[1]
    if top and Path(top).resolve() == pkg_root:
        commit = _git("rev-parse", "HEAD") or "unknown"
        status = _git("status", "--porcelain", "--untracked-files=no")
        return commit, (bool(status) if status is not None else None)
    try:
        direct = json.loads(metadata.distribution("osteo").read_text("direct_url.json") or "{}")
        vcs = direct.get("vcs_info", {})
        if vcs.get("commit_id"):
            return vcs["commit_id"], False
    except (metadata.PackageNotFoundError, ValueError):
        pass
    return "unknown", None


def version_string() -> str:
    """'osteo 0.2.0 (commit abc123def456, dirty)': what ``python -m osteo --version`` prints."""
    commit, dirty = git_commit()
    state = "" if dirty is None else (", dirty" if dirty else ", clean")
    return f"osteo {osteo.__version__} (commit {commit[:12]}{state})"


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results."""
    out = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def device_name(accelerator: str) -> str:
    """'cpu: <processor>' or 'cuda: <GPU name>' for the accelerator a run used."""
    if accelerator in ("gpu", "cuda"):
        import torch

        return f"cuda: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cuda: unavailable"
    try:
        with open("/proc/cpuinfo") as f:
            name = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        name = ""
    return f"cpu: {name or platform.processor() or platform.machine()}"


def provenance(accelerator: str = "cpu", precision: str = "32-true") -> dict:
    """The provenance record: osteo version and commit (and whether the tree was dirty),
    library versions, device and precision."""
    commit, dirty = git_commit()
    return {"osteo_version": osteo.__version__, "git_commit": commit, "git_dirty": dirty,
            "libraries": library_versions(), "device": device_name(accelerator), "precision": precision}


def provenance_line(p: dict) -> str:
    """One human-readable line of a provenance record (report, predict CSV)."""
    libs = ", ".join(f"{k} {v}" for k, v in p.get("libraries", {}).items())
    dirty = {True: ", dirty tree", False: "", None: ""}[p.get("git_dirty")]
    return (f"osteo {p.get('osteo_version')} (commit {str(p.get('git_commit'))[:12]}{dirty}); {libs}; "
            f"{p.get('device')}, {p.get('precision')}")
