"""A Hydra sweeper that runs the union of several grids (each a cartesian product).

Each grid maps override keys to values in Hydra's sweep syntax (``a,b``, ``range(0,5)``).
Command-line overrides apply to every grid, except for keys a grid sets itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf


class GridsSweeper(BasicSweeper):
    def __init__(self, grids: list | None = None, max_batch_size: int | None = None) -> None:
        super().__init__(max_batch_size=max_batch_size, params=None)
        self.grids = [dict(OmegaConf.to_container(g) if not isinstance(g, dict) else g)
                      for g in (grids or [])]

    def job_overrides(self, arguments: list[str]) -> list[list[str]]:
        """Every job's override list, grid by grid, in order."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader
                                        if self.hydra_context else None)
        cli = parser.parse_overrides(arguments)
        jobs: list[list[str]] = []
        for grid in self.grids or [{}]:
            own = [f"{k}={_fmt(v)}" for k, v in grid.items()]
            keys = set(grid)
            rest = [o for o in cli if o.get_key_element() not in keys]
            overrides = parser.parse_overrides(own) + rest
            for batch in self.split_arguments(overrides, None):
                jobs.extend(batch)
        return jobs

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        jobs = self.job_overrides(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        n = self.max_batch_size or len(jobs) or 1
        returns = []
        for start in range(0, len(jobs), n):
            batch = jobs[start:start + n]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=start)
            for r in results:
                _ = r.return_value  # raises if a job failed
            returns.append(results)
        return returns


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    return str(v)
