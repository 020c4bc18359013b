"""python -m osteo.report [experiment=demo] [report.runs_dir=...] [--self-contained]: rebuild
outputs/report from the run files.

``--self-contained`` (or ``report.self_contained=true``) writes one HTML file with every
figure embedded, to attach to an email.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from osteo.config import CONF_DIR

log = logging.getLogger("osteo.report")


@hydra.main(config_path=str(CONF_DIR), config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from osteo.cli import user_errors_exit
    from osteo.report.build import build_report, command_line
    from osteo.settings import REPORT_RULES, check_settings

    with user_errors_exit():
        check_settings(cfg, REPORT_RULES, relations=())
        s = build_report(cfg.report.runs_dir, cfg.report.out_dir, cfg.report, command_line())
    log.info("report: %s/index.html (%d configurations, %d missing/failed runs listed)", cfg.report.out_dir,
             len(s["configs"]), len(s["missing"]))
    if s.get("best"):
        b = s["configs"][s["best"]]
        log.info("best by validation AUC: %s: ensemble test AUC %.3f [%.3f, %.3f]", s["best"], b["ens_auc"],
                 b["ens_lo"], b["ens_hi"])


def _translate_flags(argv: list[str]) -> list[str]:
    """Hydra takes overrides only: ``--self-contained`` becomes ``report.self_contained=true``."""
    return [("report.self_contained=true" if a == "--self-contained" else a) for a in argv]


if __name__ == "__main__":
    sys.argv = [sys.argv[0]] + _translate_flags(sys.argv[1:])
    from osteo.cli import user_errors_exit
    from osteo.config import check_command_line

    with user_errors_exit():   # a misspelt setting or group option: one line, exit 2 (Hydra: several, exit 1)
        check_command_line(sys.argv[1:], "report")
    try:
        main()
    except KeyboardInterrupt:
        print("osteo: interrupted: the report folder is as it was before", file=sys.stderr)
        raise SystemExit(130) from None
