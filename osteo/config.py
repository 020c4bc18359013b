"""Where the project's Hydra configs live, and composing them from code (CLIs other than
train, and tests).

In a source checkout the configs are the top-level ``conf/`` folder; an installed wheel carries
the same files as the package data ``osteo/conf/`` (pyproject maps one onto the other).
"""

from __future__ import annotations

from collections.abc import Callable
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
    """The config ``config_name`` with ``overrides`` (Hydra syntax), resolved on access. An
    override Hydra cannot read or apply (a misspelt key, an unknown group option) raises
    ``osteo.cli.UserError`` with one line (``override_error``)."""
    from hydra import compose as _compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException

    overrides = list(overrides or [])
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return _compose(config_name=config_name, overrides=overrides, return_hydra_config=return_hydra_config)
    except HydraException as e:   # composing: an override it cannot read or apply (or a broken conf/)
        raise override_error(e, overrides, config_name) from None


def check_command_line(argv: list[str], config_name: str,
                       check: Callable[[DictConfig], None] | None = None) -> list[DictConfig]:
    """Compose ``config_name`` with the overrides of a Hydra command line (``argv``: train's or
    the report's arguments), so that an override Hydra cannot read or apply is one ``UserError``
    line before Hydra runs (Hydra prints several lines and exits 1), and pass the config to
    ``check`` (which raises a user error for settings no run can use). A multirun is checked job
    by job (``sweep_jobs``): every job that brings a value not seen in an earlier job is composed
    and checked, so a bad value in a sweep is said before its first job runs, not at the end of
    the sweep. Returns the configs composed: the first job's, and each job checked (none for a
    command line left to Hydra: --help, --cfg, --info, --config-dir/-path/-name,
    --experimental-rerun, hydra.searchpath, which change what Hydra composes or ask it for
    something else)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException
    from hydra.types import RunMode

    try:
        a, _ = get_args_parser().parse_known_args(argv)
    except SystemExit:   # a flag Hydra itself cannot read: Hydra says so
        return []
    if (a.help or a.hydra_help or a.cfg or a.info or a.shell_completion or a.config_path or a.config_name
            or a.config_dir or a.experimental_rerun or any("hydra.searchpath" in o for o in a.overrides)):
        return []
    try:
        parsed = OverridesParser.create().parse_overrides(a.overrides)
    except OverrideParseException as e:
        raise override_error(e, a.overrides, config_name) from None
    first = []
    for o in parsed:   # the first job's value of a swept setting (fold=0,1 -> fold=0)
        if o.is_sweep_override():
            try:
                value = next(iter(o.sweep_string_iterator()), None)
            except HydraException:   # glob() needs the config's options: Hydra checks it itself
                value = None
            if value is None:
                continue
            first.append(f"{o.get_key_element()}={value}")
        else:
            first.append(o.input_line)
    cfg = compose(first, config_name, return_hydra_config=True)
    if check is None:
        return [cfg]
    jobs = sweep_jobs(cfg, a.overrides) if a.multirun or cfg.hydra.mode == RunMode.MULTIRUN else None
    if not jobs:
        check(cfg)
        return [cfg]
    seen: set[str] = set()
    checked = [cfg]
    for job in jobs:
        if not set(job) <= seen:
            checked.append(compose(job, config_name))
            check(checked[-1])
            seen.update(job)
    return checked


def sweep_jobs(cfg: DictConfig, overrides: list[str]) -> list[list[str]] | None:
    """Every job's overrides (the command line's hydra overrides, then the job's own) of a
    multirun with ``overrides`` on the command line, as osteo's grids sweeper (``cfg.hydra``,
    composed with ``return_hydra_config``) will launch them; None for another sweeper, or for
    a sweep that needs the config's options to expand (``glob()``)."""
    from hydra.errors import HydraException
    from hydra_plugins.osteo_sweeper.grids_sweeper import GridsSweeper

    sweeper = cfg.hydra.sweeper
    if sweeper.get("_target_") != f"{GridsSweeper.__module__}.{GridsSweeper.__name__}":
        return None
    is_hydra = [o.lstrip("+~").startswith(("hydra.", "hydra/")) for o in overrides]
    hydra = [o for o, h in zip(overrides, is_hydra) if h]
    task = [o for o, h in zip(overrides, is_hydra) if not h]
    try:
        return [hydra + job for job in GridsSweeper(grids=sweeper.get("grids")).job_overrides(task)]
    except HydraException:
        return None


def _settings(cfg, prefix: str = "") -> list[str]:
    """Every dotted key in ``cfg``, groups of settings (``data.roi``) and settings alike."""
    from omegaconf import OmegaConf

    keys = []
    for k in cfg.keys() if OmegaConf.is_dict(cfg) else []:
        key = f"{prefix}{k}"
        child = cfg._get_node(k)
        keys += [key] + (_settings(child, f"{key}.") if OmegaConf.is_dict(child) else [])
    return keys


def _close_settings(key: str, keys: list[str]) -> list[str]:
    """Up to two keys of ``keys`` near ``key``: beside it (same parent, a close last part), or
    as deep (the whole dotted key close: ``dat.roi.scale``)."""
    import difflib

    parent, _, leaf = key.rpartition(".")
    beside = {k.rpartition(".")[2]: k for k in keys if k.rpartition(".")[0] == parent}
    close = [beside[m] for m in difflib.get_close_matches(leaf, list(beside), n=2, cutoff=0.6)]
    level = [k for k in keys if k.count(".") == key.count(".")]
    return close or difflib.get_close_matches(key, level, n=2, cutoff=0.8)


def override_error(e: Exception, overrides: list[str], config_name: str) -> Exception:
    """One line for Hydra's error about an override: which override, what is wrong and what to
    write instead (a close setting or option where there is one); ``osteo.cli.UserError``. Hydra
    prints several lines of its own and exits 1 (train, report) or raises with a traceback
    (the commands that compose from code)."""
    import difflib
    import re

    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    from osteo.cli import UserError

    command = f"python -m osteo.{'report' if config_name == 'report' else 'train'} --cfg job"
    first = (str(e).strip().splitlines() or [""])[0]
    if not isinstance(e, ConfigCompositionException):   # Hydra could not read an override
        parser = OverridesParser.create()
        for o in overrides:
            try:
                parser.parse_overrides([o])
            except OverrideParseException as bad:   # ["Error parsing override 'o'",] why, "See <link>"
                why = next((ln for ln in str(bad).strip().splitlines()
                            if ln.strip() and not ln.startswith(("Error parsing override", "See "))), first)
                return UserError(f"{o}: not an override Hydra can read ({why}); write setting=value, e.g. "
                                 "data.roi.scale=0.5, quoting a value with spaces, commas or brackets")
        return e
    if isinstance(e, MissingConfigException) and e.missing_cfg_file and "/" in e.missing_cfg_file:
        group, name = e.missing_cfg_file.rsplit("/", 1)
        options = sorted(e.options or [])
        close = difflib.get_close_matches(name, options, n=2)
        given = next((o for o in overrides if o.lstrip("+~").split("=", 1)[0].split("@")[0] == group), f"{group}={name}")
        return UserError(f"{given}: no {group} config named {name!r}"
                         + (f"; did you mean {' or '.join(close)}?" if close else "")
                         + (f" (the {group} configs: {', '.join(options)})" if options else ""))
    m = re.match(r"Could not override '([^']+)'", first)
    if m:
        key = m.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0] == key), key)
        try:
            keys = _settings(compose([], config_name))
        except Exception:  # noqa: BLE001 - the hint is a nicety; the line says what is wrong without it
            keys = []
        close = _close_settings(key, keys)
        return UserError(f"{given}: the {config_name} config has no setting {key}"
                         + (f"; did you mean {' or '.join(close)}?" if close else "")
                         + f" ({command} lists the settings; +{given} adds a new one)")
    return UserError(f"{' '.join(overrides)}: {first}")


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
