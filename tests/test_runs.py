import os
import shutil

from osteo.runs import distinguishing_settings, extra_settings, load_runs, name_settings


def test_run_directory_names_split_into_settings():
    assert name_settings("backbone=vgg16,data.roi.scale=0.5,depth=1,fold=0") == [
        "backbone=vgg16", "data.roi.scale=0.5", "depth=1", "fold=0"]
    assert name_settings("data.roi.box_xywh=[250,440,700,140],fold=1,x='a,b'") == [
        "data.roi.box_xywh=[250,440,700,140]", "fold=1", "x='a,b'"]
    assert name_settings("q0") == [] and name_settings("fold=1,copy") == []
    assert extra_settings("backbone=vgg16,depth=1,fold=0") == []
    assert extra_settings("backbone=vgg16,data.roi.scale=0.5,depth=1,fold=0,seed=3") == [
        "data.roi.scale=0.5", "seed=3"]


def test_only_settings_that_tell_runs_apart_name_configurations():
    # the demo's runs and three at half scale beside them
    assert distinguishing_settings(["backbone=vgg16,depth=1,fold=0", "backbone=vgg16,data.roi.scale=0.5,depth=1,fold=0"]
                                   ) == ["", " [data.roi.scale=0.5]"]
    # a sweep's common override names nothing apart
    assert distinguishing_settings(["backbone=v,data.phantom.n=96,depth=0,fold=0",
                                    "backbone=v,data.phantom.n=96,depth=5,fold=0"]) == ["", ""]
    assert distinguishing_settings(["a=1,n=9,fold=0", "a=2,b=3,n=9,fold=0", "b=3,n=9,fold=1"]) == [
        " [a=1]", " [a=2, b=3]", " [b=3]"]


def test_runs_that_differ_in_a_setting_are_configurations_and_a_copied_run_is_not_a_fold(tiny_sweep, tmp_path):
    sweeps = tmp_path / "sweeps"
    shutil.copytree(tiny_sweep / "sweeps", sweeps)
    runs0, _, problems0 = load_runs(sweeps)
    first = sweeps / "finetune_depth" / "backbone=vgg16_tiny,depth=1,fold=0"
    # the same fold with another ROI scale (its name says so, as a sweep names it)
    shutil.copytree(first, first.parent / "backbone=vgg16_tiny,data.roi.scale=0.5,depth=1,fold=0")
    runs, preds, problems = load_runs(sweeps)
    label = "vgg16_tiny TF1, random init"
    assert (runs["config"] == label).sum() == 2 and (runs["config"] == label + " [data.roi.scale=0.5]").sum() == 1
    assert {"run": f"{label} [data.roi.scale=0.5] fold 1", "status": "missing"}.items() <= problems[-1].items()
    # the same run copied elsewhere under the sweeps: one fold, the newer copy counts
    again = sweeps / "moved" / first.name
    shutil.copytree(first, again)
    os.utime(again / "metrics.json", (os.path.getmtime(first / "metrics.json") + 60,) * 2)
    runs, preds, problems = load_runs(sweeps)
    assert len(runs) == len(runs0) + 1 and len(preds) == len(runs)
    kept = runs[(runs["config"] == label) & (runs["fold"] == 0)]["dir"]
    assert list(kept) == [str(again)]
    dup = [p for p in problems if p["status"] == "duplicate"]
    assert len(dup) == 1 and dup[0]["run"] == "finetune_depth/backbone=vgg16_tiny,depth=1,fold=0"
    assert "moved/backbone=vgg16_tiny,depth=1,fold=0" in dup[0]["detail"]
    assert len(problems) == len(problems0) + 2  # the duplicate and the new configuration's missing fold
