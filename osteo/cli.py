"""What every osteo command shares: messages through ``logging``, and one contract for errors.

The contract: a user's mistake (a bad manifest, a missing file, an impossible split, weights
that cannot be had, ...) is reported as one line per problem, naming the file, row, column or
setting, what is wrong and what to do, with exit code 2 and no traceback. ``--debug`` (or
OSTEO_DEBUG=1, or Hydra's HYDRA_FULL_ERROR=1) keeps the traceback for developers. Anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("osteo")

USAGE_EXIT = 2


class UserError(Exception):
    """A mistake the user can fix; the message says what, where and what to do."""


def setup_logging(level: int = logging.INFO) -> None:
    """Send osteo's log messages to stderr as '[osteo] message' unless logging is already
    configured (Hydra configures it for train and report, with per-job log files)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="[osteo] %(message)s")
    logging.getLogger("osteo").setLevel(level)


_SAID: dict[str, tuple[str, ...]] = {}   # message -> the log files open when it was said in full


def _log_files() -> tuple[str, ...]:
    """The files the root logger writes to (Hydra's per-job log: <run>/train.log)."""
    return tuple(h.baseFilename for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler))


def warn_once(logger: logging.Logger, message: str, again: str) -> None:
    """Log the warning ``message`` the first time this process says it, and the one line ``again``
    every later time, followed by where the full message is: "(in full above)", or the log file
    it went to where that is not among the current ones (a sweep's later job logs). The runs of a
    sweep in one process (Hydra's basic launcher) would repeat the same data warnings, with their
    lists of images, once per run."""
    files = _log_files()
    if message not in _SAID:
        _SAID[message] = files
        logger.warning(message)
        return
    elsewhere = [f for f in _SAID[message] if f not in files]
    logger.warning("%s (in full %s)", again, f"in {elsewhere[0]}" if elsewhere else "above")


# The user-mistake exceptions of osteo's modules: (module, class name).
USER_ERROR_CLASSES = (
    ("osteo.data.manifest", "ManifestError"), ("osteo.data.splits", "SplitError"),
    ("osteo.data.images", "ImageReadError"), ("osteo.models.weights", "PretrainedWeightsError"),
    ("osteo.models.backbones", "ModelConfigError"), ("osteo.settings", "SettingError"),
    ("lightning_fabric.utilities.exceptions", "MisconfigurationException"),   # a trainer setting
    ("osteo.train", "RunConflictError"), ("osteo.checkpoints", "UnsafeCheckpointError"),
    ("osteo.data.covariates", "CovariateError"), ("osteo.data.phantom", "FieldsFileError"),
)


def _loaded(module: str) -> list:
    """The loaded copies of ``module``: its import, and ``__main__`` where it runs as
    ``python -m module`` (a class defined there is another class than the imported one's)."""
    main = sys.modules.get("__main__")
    as_main = getattr(getattr(main, "__spec__", None), "name", None) == module
    return [m for m in (sys.modules.get(module), main if as_main else None) if m is not None]


def _user_error_types() -> tuple[type[BaseException], ...]:
    """UserError and the classes of USER_ERROR_CLASSES whose modules are loaded: an exception
    of a module never imported cannot have been raised, and importing one here (train, checkpoints:
    torch) would cost seconds on every one-line error."""
    found = (getattr(m, name, None) for module, name in USER_ERROR_CLASSES for m in _loaded(module))
    return (UserError, *(t for t in found if isinstance(t, type)))


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and the exceptions behind it (``raise ... from``, or raised while handling), outermost first."""
    out: list[BaseException] = []
    while e is not None and all(e is not seen for seen in out):
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def root_cause(e: BaseException) -> BaseException:
    """The innermost exception of a chain."""
    return _chain(e)[-1]


def user_error(e: BaseException) -> BaseException | None:
    """The user mistake behind ``e`` (itself or any exception in its chain), or None."""
    types = _user_error_types()
    return next((x for x in _chain(e) if isinstance(x, types)), None)


def describe_error(e: BaseException) -> str:
    """'Type: message' of an exception, its first line only for non-user errors."""
    msg = str(e).strip()
    return f"{type(e).__name__}: {msg if user_error(e) is e else (msg.splitlines() or [''])[0]}"


def debug_requested() -> bool:
    """Tracebacks wanted: --debug on the command line, OSTEO_DEBUG=1 or HYDRA_FULL_ERROR=1."""
    return ("--debug" in sys.argv or os.environ.get("OSTEO_DEBUG", "") not in ("", "0")
            or os.environ.get("HYDRA_FULL_ERROR", "") == "1")


def report_user_error(e: BaseException) -> None:
    """Print a user mistake: 'osteo: error: <message>' on stderr, no traceback."""
    print(f"osteo: error: {str(e).strip()}", file=sys.stderr)


@contextmanager
def user_errors_exit() -> Iterator[None]:
    """Inside the block, a user mistake prints one line and exits 2 (SystemExit); other errors,
    and every error under --debug, propagate with their traceback."""
    try:
        yield
    except Exception as e:
        u = user_error(e)
        if u is None or debug_requested():
            raise
        report_user_error(u)
        raise SystemExit(USAGE_EXIT) from None


def run_cli(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run an argparse command's ``main`` under the contract; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        os.environ["OSTEO_DEBUG"] = "1"
        args.remove("--debug")
    try:
        with user_errors_exit():
            return int(main(args) or 0)
    except SystemExit as e:
        if isinstance(e.code, str):   # sys.exit("message"): the message, as Python prints it
            print(e.code, file=sys.stderr)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else USAGE_EXIT)
    except KeyboardInterrupt:
        print("osteo: interrupted", file=sys.stderr)
        return 130
