"""Where the project's Hydra configs live, and composing them from code (CLIs other than
train, and tests).

In a source checkout the configs are the top-level ``conf/`` folder; an installed wheel carries
the same files as the package data ``osteo/conf/`` (pyproject maps one onto the other).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig


def _conf_dir() -> Path:
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(f"osteo's configs (train.yaml) are neither in {here / 'conf'} nor in "
                            f"{here.parent / 'conf'}: reinstall osteo")


CONF_DIR = _conf_dir()


def compose(overrides: list[str] | None = None, config_name: str = "train",
            return_hydra_config: bool = False) -> DictConfig:
    """The config ``config_name`` with ``overrides`` (Hydra syntax), resolved on access."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return _compose(config_name=config_name, overrides=list(overrides or []),
                        return_hydra_config=return_hydra_config)


def outputs_root() -> Path:
    """osteo's outputs folder as the config sets it (``paths.outputs``: ``OSTEO_OUTPUTS``, or
    ``outputs`` in the current folder)."""
    return Path(str(compose().paths.outputs))


# --------------------------------------------------------------------------- config resolvers
# Registered on import (train, report and every CLI import this module before composing).

def data_tag(data) -> str:
    """Short name of a data config for run directories: 'data=<manifest stem>-<8 hex of its
    path and bytes>' or 'data=phantom-n680-seed0-d1.0-f0.0'."""
    import hashlib

    manifest = data.get("manifest")
    if manifest:
        p = Path(str(manifest)).expanduser().resolve()
        h = hashlib.sha1(str(p).encode())
        if p.is_file():
            h.update(p.read_bytes())
        return f"data={p.stem}-{h.hexdigest()[:8]}"
    ph = data.phantom
    return f"data=phantom-n{ph.n}-seed{ph.seed}-d{ph.difficulty}-f{ph.framing_spread}"


def weights_tag(weights) -> str:
    """Short name of a ``weights`` value for run directories (see osteo.models.weights)."""
    from osteo.models.weights import parse_weights

    return parse_weights(weights).tag()


def covariates_tag(covariates) -> str:
    """',covariates=age+sex' for run directories of a fusion model; '' without covariates."""
    names = [str(c) for c in (covariates or [])]
    return f",covariates={'+'.join(names)}" if names else ""


def dir_name(overrides: str) -> str:
    """A sweep's override string (Hydra's ``job.override_dirname``) as one folder name: a value
    that holds a path keeps its text with '/' and '\\' written as '_', so it names one run
    directory and does not open folders below it."""
    return str(overrides).replace("/", "_").replace("\\", "_")


def norm(which: str, backbone: str, weights) -> list[float]:
    """'mean' or 'std' of the input normalisation for ``backbone`` with ``weights``."""
    from osteo.models.backbones import normalisation

    mean, std = normalisation(backbone, weights)
    return list(mean if which == "mean" else std)


def _register() -> None:
    from omegaconf import OmegaConf

    for name, fn in (("osteo.data_tag", data_tag), ("osteo.weights_tag", weights_tag), ("osteo.norm", norm),
                     ("osteo.covariates_tag", covariates_tag), ("osteo.dir_name", dir_name)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


_register()
