"""python -m osteo.report [experiment=demo] [report.runs_dir=...]: rebuild outputs/report."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="../../conf", config_name="report", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from osteo.report.build import build_report, command_line

    s = build_report(cfg.report.runs_dir, cfg.report.out_dir, cfg.report, command_line())
    print(f"[osteo] report: {cfg.report.out_dir}/index.html ({len(s['configs'])} configurations, "
          f"{len(s['missing'])} missing/failed runs listed)")
    if s.get("best"):
        b = s["configs"][s["best"]]
        print(f"[osteo] best by validation AUC: {s['best']}: ensemble test AUC {b['ens_auc']:.3f} "
              f"[{b['ens_lo']:.3f}, {b['ens_hi']:.3f}]")


if __name__ == "__main__":
    main()
