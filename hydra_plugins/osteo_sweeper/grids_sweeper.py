"""A Hydra sweeper that runs the union of several grids (each a cartesian product).

Each grid maps override keys to values in Hydra's sweep syntax (``a,b``, ``range(0,5)``).
Command-line overrides apply to every grid and replace a grid's swept values for the same key
(``depth=0,1`` narrows a sweep). A value a grid fixes (one value, e.g. the scratch grid's
``weights: none``) is part of that grid's definition and stays: ``weights=/path`` on the command
line then reaches only the grids that do not fix ``weights``.
"""

from __future__ import annotations

import itertools
import logging
import time
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf


class GridsSweeper(Sweeper):
    def __init__(self, grids: list | None = None, max_batch_size: int | None = None) -> None:
        self.grids = [g if isinstance(g, dict) else OmegaConf.to_container(g) for g in (grids or [])]
        self.max_batch_size = max_batch_size
        self.config = self.launcher = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def job_overrides(self, arguments: list[str]) -> list[list[str]]:
        """Every job's override list, grid by grid, in order."""
        loader = self.hydra_context.config_loader if self.hydra_context else None
        parser = OverridesParser.create(config_loader=loader)
        cli = parser.parse_overrides(arguments)
        cli_keys = {o.get_key_element() for o in cli}
        jobs: list[list[str]] = []
        for grid in self.grids or [{}]:
            own = parser.parse_overrides([f"{k}={_fmt(v)}" for k, v in grid.items()])
            fixed = {o.get_key_element() for o in own if not o.is_sweep_override()}
            own = [o for o in own if o.get_key_element() in fixed or o.get_key_element() not in cli_keys]
            axes = []
            for o in own + [o for o in cli if o.get_key_element() not in fixed]:
                key = o.get_key_element()
                if o.is_sweep_override():
                    axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
                else:
                    axes.append([f"{key}={o.get_value_element_as_str()}"])
            jobs.extend(list(job) for job in itertools.product(*axes))
        return jobs

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.launcher is not None
        jobs = self.job_overrides(arguments)
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        # the basic launcher runs jobs one after another anyway: launch them one by one, so that
        # progress and the time left can be printed between them
        sequential = type(self.launcher).__name__ == "BasicLauncher"
        n = self.max_batch_size or (1 if sequential else len(jobs)) or 1
        returns, statuses = [], []
        log = logging.getLogger("osteo.sweep")
        t0 = time.perf_counter()
        for start in range(0, len(jobs), n):
            batch = jobs[start:start + n]
            self.validate_batch_is_legal(batch)
            results = self.launcher.launch(batch, initial_job_idx=start)
            for r in results:
                statuses.append(r.return_value)  # raises if a job crashed outside the run
            returns.append(results)
            done, spent = start + len(batch), time.perf_counter() - t0
            if start == 0:
                first = (len(batch), spent)  # the first batch also makes data and caches: kept out of the rate
            if done < len(jobs):
                log.info(progress_line(done, len(jobs), spent, first))
        if not summarise(statuses):
            raise SystemExit(1)  # a sweep in which any run failed never exits 0
        return returns


def progress_line(done: int, total: int, spent: float, first: tuple[int, float]) -> str:
    """'sweep progress: 3 of 15 runs done in 9 min 10 s; about 24 min 00 s left' after ``done``
    of ``total`` runs in ``spent`` seconds. The time left is the rate of the runs after the first
    batch (``first``: its runs and the seconds it took), which also made the data and caches;
    right after the first batch there is no such rate yet, and the line says so instead of
    counting every run as long as the first."""
    if done <= first[0]:
        return (f"sweep progress: {done} of {total} runs done in {_clock(spent)} (with the data and caches "
                "the first runs make); the time left is said after the next run")
    rate = (spent - first[1]) / (done - first[0])
    return f"sweep progress: {done} of {total} runs done in {_clock(spent)}; about {_clock(rate * (total - done))} left"


def summarise(statuses: list) -> bool:
    """Log 'sweep: N finished, N skipped, N failed' and the first line of each distinct cause;
    True when no run failed. ``statuses``: the task's return values (dicts with 'status' and
    'cause'; other values count as finished)."""
    log = logging.getLogger("osteo.sweep")
    kinds = [s.get("status", "finished") if isinstance(s, dict) else "finished" for s in statuses]
    counts = {k: kinds.count(k) for k in ("finished", "skipped", "failed")}
    log.info("sweep: %d finished, %d skipped, %d failed (of %d runs)", counts["finished"], counts["skipped"],
             counts["failed"], len(statuses))
    causes: dict[str, int] = {}
    for s in statuses:
        if isinstance(s, dict) and s.get("status") == "failed":
            first = (str(s.get("cause") or "unknown").splitlines() or ["unknown"])[0]
            causes[first] = causes.get(first, 0) + 1
    for cause, k in causes.items():
        log.error("  %d run(s) failed: %s", k, cause)
    return counts["failed"] == 0


def _clock(seconds: float) -> str:
    """'12 min 05 s' or '45 s'."""
    m, sec = divmod(int(round(seconds)), 60)
    return f"{m} min {sec:02d} s" if m else f"{sec} s"


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if v is None:
        return "null"
    return str(v)
