"""What every osteo command shares: its messages go through ``logging``."""

from __future__ import annotations

import logging


def setup_logging(level: int = logging.INFO) -> None:
    """Send osteo's log messages to stderr as '[osteo] message' unless logging is already
    configured (Hydra configures it for train and report, with per-job log files)."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(level=level, format="[osteo] %(message)s")
    logging.getLogger("osteo").setLevel(level)
