"""The package's shape, from its own source: every import (function bodies included) points down the layers of
`mlkit.LAYERS`, no two modules import each other even indirectly, and serving never reaches the training stack."""

import ast
from pathlib import Path

import pytest
from conftest import ROOT

from mlkit import LAYERS

PACKAGE = ROOT / "mlkit"
TRAINING_STACK = {
    "papermill",
    "optuna",
    "dask",
    "distributed",
    "torch",
    "wandb",
    "sklearn",
    "skl2onnx",
    "transformers",
}
# mlkit modules that may import other mlkit modules inside a function, and why (never to hide a circle: the graph
# below counts these imports too)
LAZY = {
    "mlkit": "`%load_ext mlkit` loads the magics on demand: importing mlkit must not import IPython",
    "mlkit.cli": "`mlkit --help` must start without importing scikit-learn, torch or BentoML",
    "mlkit.cli_data": "`mlkit --help` imports it too: the same reason as mlkit.cli",
    "mlkit.cli_ab": "`mlkit --help` imports it too: the same reason as mlkit.cli",
    "mlkit.cli_registry": "`mlkit --help` imports it too: the same reason as mlkit.cli",
    "mlkit.serving": "`mlkit.serving:ModelService` resolves and loads the served model when it is first asked for",
    "mlkit.models.families": "the mlp family needs torch, an optional extra",
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "_modidx.py" or "__pycache__" in path.parts:
            continue
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> list[tuple[str, bool]]:
    "(imported module, inside a function) for every import statement of module `name`."
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    in_function = {
        id(node)
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef)
        for node in ast.walk(fn)
    }
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            targets = [module, *(f"{module}.{a.name}" for a in node.names)]
        else:
            continue
        found += [(t, id(node) in in_function) for t in targets]
    return found


def _edges() -> dict[str, set[str]]:
    "mlkit module -> the mlkit modules it imports (an ancestor package is loaded first anyway: not an edge)."
    edges = {m: set() for m in MODULES}
    for m in MODULES:
        for target, _ in _imports(m):
            if target in MODULES and target != m and not m.startswith(target + "."):
                edges[m].add(target)
    return edges


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else None
    return LAYERS[top] if top else 0


def test_every_module_has_a_layer():
    tops = {m.split(".")[1] for m in MODULES if "." in m}
    assert tops - set(LAYERS) == set(), "add the new module or subpackage to mlkit.LAYERS"
    assert set(LAYERS) - tops == set(), "mlkit.LAYERS names a module that does not exist"


def test_no_import_circles():
    edges, path, done = _edges(), [], set()

    def visit(m):
        if m in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(m) :], m]))
        if m in done:
            return
        path.append(m)
        for target in sorted(edges[m]):
            visit(target)
        path.pop()
        done.add(m)

    for m in sorted(MODULES):
        visit(m)


def test_imports_point_down_the_layers():
    up = [
        f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
        for m, targets in _edges().items()
        for t in targets
        if _layer(t) > _layer(m) and not (m == "mlkit" and t == "mlkit.magics")  # `%load_ext mlkit`, see LAZY
    ]
    assert up == []


def test_lazy_imports_of_mlkit_modules_only_where_explained():
    lazy = sorted(
        f"{m} imports {t} inside a function"
        for m in MODULES
        for t, in_function in _imports(m)
        if in_function and t in MODULES and m not in LAZY
    )
    assert lazy == [], "import it at the top of the module, or explain in LAZY why it cannot be"


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m.startswith("mlkit.serving")))
def test_serving_never_reaches_the_training_stack(module):
    edges, seen, stack, reached = _edges(), set(), [module], {}
    while stack:
        m = stack.pop()
        if m in seen:
            continue
        seen.add(m)
        for target, _ in _imports(m):
            if not target.startswith("mlkit") and target.split(".")[0] in TRAINING_STACK:
                reached.setdefault(target.split(".")[0], m)
        stack += edges[m]
    assert reached == {}, f"{module} reaches {reached} (library: the module that imports it)"


def test_the_walk_sees_imports_inside_functions():
    # the checks above are only as good as the walk: it must see a lazy import, and resolve relative ones
    assert ("mlkit.magics", True) in _imports("mlkit")
    assert "mlkit.registry.resolve" in _edges()["mlkit.serving.core"]
    assert "mlkit.models.nn" in _edges()["mlkit.models.families"]
