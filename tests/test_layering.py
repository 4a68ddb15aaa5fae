"""The package's layering, drawn from its own imports: nothing in the trainer, data, models, evaluation or the
configs imports a layer above it (the reports, inference, the search, the workflows and the commands sit above).

A command module (`__main__.py`) belongs to the commands, wherever `python -m` makes it live.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "raylm"

# Lowest first. A module may import its own layer and those below; modules in no layer here (the reports,
# inference, search, workflows, commands) are above every one of them.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("raylm", "raylm.errors"),
    ("raylm.fs", "raylm.coords", "raylm.draw", "raylm.metrics", "raylm.schema"),
    ("raylm.selection",),
    ("raylm.data", "raylm.models"),
    ("raylm.config", "raylm.cells"),
    ("raylm.train",),
    ("raylm.evaluation",),
)
ABOVE = len(LAYERS)


def layer_of(module: str) -> int:
    """The layer of a module: that of the longest LAYERS entry it is or lies under; ABOVE if none."""
    matches = [
        (len(name), index)
        for index, names in enumerate(LAYERS)
        for name in names
        if module == name or (name != "raylm" and module.startswith(name + "."))
    ]
    return max(matches)[1] if matches else ABOVE


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.Module, module: str, root: Path) -> list[tuple[int, str]]:
    """(line, raylm module) of every import in `tree`, in functions too; `from a import b` is a.b when b is a module."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.split(".")[0] == "raylm"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package
                package = module.split(".")[: -node.level] if not module.endswith("__init__") else module.split(".")
                base = ".".join([*package, base] if base else package)
            if base.split(".")[0] != "raylm":
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                path = root.parent.joinpath(*candidate.split("."))
                found.append((node.lineno, candidate if path.with_suffix(".py").exists() or path.is_dir() else base))
    return found


def upward_imports(root: Path = PACKAGE) -> list[str]:
    """`file:line imports X` for every import from a layered module into a layer above its own."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "__main__.py":
            continue  # a command
        module = module_name(path, root)
        own = layer_of(module)
        if own == ABOVE:
            continue
        for line, target in dict.fromkeys(imported(ast.parse(path.read_text()), module, root)):
            if layer_of(target) > own:
                problems.append(f"{path.relative_to(root.parent)}:{line} imports {target} (a layer above {module})")
    return problems


def test_no_module_imports_a_layer_above_its_own():
    assert upward_imports() == []


def test_an_upward_import_is_named_with_its_file_and_line(tmp_path: Path):
    root = tmp_path / "raylm"
    (root / "train").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "train" / "__init__.py").write_text("")
    (root / "train" / "loop.py").write_text("import math\n\n\ndef f():\n    from raylm.search import study\n")
    (root / "train" / "__main__.py").write_text("from raylm.search import study\n")  # a command: allowed
    (root / "config.py").write_text("from raylm.train import loop\nfrom raylm.data.crop import crop_box\n")
    (root / "search").mkdir()
    (root / "search" / "study.py").write_text("")
    assert upward_imports(root) == [
        "raylm/config.py:1 imports raylm.train.loop (a layer above raylm.config)",
        "raylm/train/loop.py:5 imports raylm.search.study (a layer above raylm.train.loop)",
    ]
