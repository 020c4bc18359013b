"""Module layering: general modules never import the layers above them or phantom-only code."""

import ast
from pathlib import Path

import pytest

import osteo

ROOT = Path(osteo.__file__).resolve().parent

# module (path below osteo/) -> import prefixes it must not use
RULES = {
    "predict.py": ["osteo.report"],
    "runs.py": ["osteo.report", "osteo.predict"],
    "checkpoints.py": ["osteo.report", "osteo.predict"],
    "gradcam.py": ["osteo.data.phantom", "osteo.report"],
    "activations.py": ["osteo.data.datamodule", "osteo.report"],
    "data/datamodule.py": ["osteo.models", "osteo.report", "osteo.predict"],
    "data/cache.py": ["osteo.models", "osteo.report"],
    "data/manifest.py": ["osteo.models", "osteo.report"],
    # the mandible finder is plain array code that data, predict and the report all call
    "anatomy/border.py": ["osteo.models", "osteo.report", "osteo.predict", "osteo.data.phantom", "torch"],
    "anatomy/placement.py": ["osteo.models", "osteo.report", "osteo.predict", "osteo.data.phantom", "torch"],
    "anatomy/mcw.py": ["osteo.models", "osteo.report", "osteo.predict", "osteo.data.phantom", "torch"],
    "anatomy/mandible.py": ["osteo.models", "osteo.report", "osteo.predict", "osteo.data.phantom", "torch"],
    "anatomy/sheet.py": ["osteo.models", "osteo.report", "osteo.predict", "osteo.data.phantom", "torch"],
    "models/hed.py": ["osteo.data", "osteo.report", "osteo.predict"],
}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


@pytest.mark.parametrize("module", sorted(RULES))
def test_module_does_not_import_layers_above_it(module):
    found = imports_of(ROOT / module)
    bad = sorted(n for n in found for p in RULES[module] if n == p or n.startswith(p + "."))
    assert not bad, f"osteo/{module} imports {bad}"


def test_the_rule_detects_a_violation(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from osteo.report.build import build_report\n")
    assert "osteo.report.build" in imports_of(f)
