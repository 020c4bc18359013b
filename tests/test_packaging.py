"""osteo as an installed package: a wheel installed (not editable) into a fresh virtual
environment runs its commands with its configs, far from the source tree; provenance is
recorded."""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    """A fresh venv holding only the osteo wheel; its dependencies are borrowed from this
    environment through a .pth file (a plain path line: the editable install's own .pth files
    there are not processed, so the source tree stays out of sys.path)."""
    tmp = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp / "dist"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((tmp / "dist").glob("osteo-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "borrowed_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py, tmp, wheel


def run_in(py, cwd, *args, env=None, timeout=300):
    e = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    e.update(env or {})
    return subprocess.run([str(py), *args], capture_output=True, text=True, cwd=cwd, env=e, timeout=timeout)


def test_wheel_carries_configs_and_templates(wheel_venv):
    import zipfile

    _, _, wheel = wheel_venv
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in ("osteo/conf/train.yaml", "osteo/conf/sweep/finetune_depth.yaml", "osteo/conf/callbacks/default.yaml",
              "osteo/report/templates/report.html.j2", "hydra_plugins/osteo_sweeper/grids_sweeper.py"):
        assert f in names, f


def test_installed_wheel_runs_its_commands_outside_the_source_tree(wheel_venv, tmp_path):
    py, _, _ = wheel_venv
    r = run_in(py, tmp_path, "-c", "import osteo, osteo.config as c; print(osteo.__file__); print(c.CONF_DIR)")
    assert r.returncode == 0, r.stderr[-2000:]
    pkg, conf = r.stdout.split()
    assert str(ROOT) not in pkg and Path(conf).name == "conf" and Path(conf).parent == Path(pkg).parent
    r = run_in(py, tmp_path, "-m", "osteo", "--version")
    assert r.returncode == 0 and r.stdout.startswith("osteo 0."), r.stderr[-2000:]
    # Hydra finds the packaged configs: compose a sweep job and print it
    r = run_in(py, tmp_path, "-m", "osteo.train", "+sweep=demo", "--cfg", "job")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "backbone: vgg16" in r.stdout and "weights: vgg16_hed" in r.stdout
    r = run_in(py, tmp_path, "-m", "osteo.report", "--cfg", "job")
    assert r.returncode == 0 and "sensitivity_target" in r.stdout, r.stderr[-3000:]
    r = run_in(py, tmp_path, "-m", "osteo.data.phantom", "--n", "4", "--out", str(tmp_path / "ph"), "--workers", "1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(list((tmp_path / "ph" / "images").glob("*.png"))) == 4


def test_version_names_the_commit_in_a_checkout():
    from osteo.provenance import git_commit, provenance, version_string

    commit, dirty = git_commit()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert commit == head.stdout.strip() and dirty in (True, False)
        assert commit[:12] in version_string()
    p = provenance("cpu", "32-true")
    assert set(p["libraries"]) >= {"torch", "timm", "pytorch-lightning", "numpy", "python"}
    assert p["device"].startswith("cpu: ") and p["precision"] == "32-true"
    json.dumps(p)  # serialisable as is
