"""The package's import surface: lazy, acyclic, explicit.

Each check runs in a fresh interpreter, so what this test process already imported does not count.
"""

import ast
import json
import pathlib
import subprocess
import sys

import pytest

import saliency_jax

PKG = pathlib.Path(saliency_jax.__file__).parent
HEAVY = ("optax", "orbax", "matplotlib", "torch", "ray", "keras", "haiku", "equinox")


def _loaded_after(code: str) -> set[str]:
    probe = f"import sys, json\n{code}\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_import_loads_no_heavy_dependency():
    loaded = _loaded_after("import saliency_jax")
    assert not loaded & set(HEAVY), loaded & set(HEAVY)
    assert "saliency_jax" in loaded


@pytest.mark.parametrize("name", ["occlusion", "deconvnet", "project_units", "generate", "get_model"])
def test_compute_names_load_no_training_or_plotting_library(name):
    # occlusion and backprop need jax/flax only; optax (training), orbax (checkpoints) and
    # matplotlib (rendering) load only with the names that use them.
    loaded = _loaded_after(f"import saliency_jax as sj\nsj.{name}")
    assert not loaded & {"optax", "orbax", "matplotlib"}, (name, loaded & {"optax", "orbax", "matplotlib"})


OPTIONAL = ("ray", "keras", "haiku", "equinox", "torch", "captum")


def test_the_folder_job_and_cli_load_no_optional_extra():
    # `--engine ray` loads Ray when it runs; nothing else in the package imports an optional extra.
    loaded = _loaded_after("import saliency_jax as sj\nsj.explain_paths\nimport saliency_jax.app.cli")
    assert not loaded & set(OPTIONAL), loaded & set(OPTIONAL)


def test_every_public_name_resolves_and_is_listed():
    for name in saliency_jax.__all__:
        assert getattr(saliency_jax, name) is not None, name
    assert set(saliency_jax.__all__) <= set(dir(saliency_jax))
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        saliency_jax.no_such_name  # noqa: B018


def test_occlusion_is_the_function_after_every_module_is_imported():
    # No module named saliency_jax.occlusion exists to shadow the function once imported.
    code = ("import importlib, pkgutil, saliency_jax as sj\n"
            "[importlib.import_module(m.name) for m in pkgutil.walk_packages(sj.__path__, 'saliency_jax.')"
            " if not m.name.startswith('saliency_jax.checkpoints')]\n"
            "print(json.dumps(callable(sj.occlusion) and not hasattr(sj.occlusion, '__path__')))")
    out = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "true"


def _modules():
    return sorted(p for p in PKG.rglob("*.py") if "checkpoints" not in p.parts)


def _name(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: pathlib.Path):
    """(module imported, names imported from it) for every import statement, at any depth."""
    tree = ast.parse(path.read_text())
    here = _name(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                pkg = here.split(".") if path.name == "__init__.py" else here.split(".")[:-1]
                base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
            yield base, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_every_module_declares_all():
    missing = [str(p.relative_to(PKG)) for p in _modules()
               if p.name != "__main__.py" and "__all__" not in p.read_text()]
    assert not missing, missing


def test_no_private_name_is_imported_across_modules():
    offenders = []
    for path in _modules():
        for module, names in _imports(path):
            if not module.startswith("saliency_jax"):
                continue
            for n in names:
                is_module = (PKG.parent / (module.replace(".", "/") + f"/{n}.py")).exists()
                if n.startswith("_") and not is_module:  # a package-private module (_validate) is shared on purpose
                    offenders.append(f"{_name(path)}: from {module} import {n}")
    assert not offenders, offenders


# The flows' import direction: app -> methods (the registry) -> (occlude, backprop, metrics, model)
# -> (jaxpr, _validate, _io, ...).
LAYER = {"app": 3, "methods": 2, "occlude": 1, "backprop": 1, "metrics": 1, "model": 1}


def _layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] == "__main__":
        return 4  # the top-level package (it re-exports every flow) and ``python -m saliency_jax``
    return LAYER.get(parts[1], 0)


def test_imports_run_one_way_between_the_flows():
    upward = []
    for path in _modules():
        src = _name(path)
        for module, _ in _imports(path):
            if not module.startswith("saliency_jax.") or src == "saliency_jax":
                continue
            a, b = src.split("."), module.split(".")
            same_flow = len(a) > 1 and len(b) > 1 and a[1] == b[1]
            if not same_flow and _layer(module) >= _layer(src) and _layer(module) > 0:
                upward.append(f"{src} -> {module}")
    assert not upward, upward


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    names = {_name(p) for p in _modules()}
    for path in _modules():
        src = _name(path)
        deps = set()
        for module, imported in _imports(path):
            for cand in [module] + [f"{module}.{n}" for n in imported]:
                if cand in names and cand != src and not src.startswith(cand + "."):
                    deps.add(cand)
        graph[src] = deps
    # A package __init__ that lazily re-exports its modules is no edge: count only real imports.
    seen, stack, cycles = set(), [], []

    def visit(n):
        if n in stack:
            cycles.append(stack[stack.index(n):] + [n])
            return
        if n in seen:
            return
        seen.add(n)
        stack.append(n)
        for d in graph.get(n, ()):
            visit(d)
        stack.pop()

    for n in sorted(graph):
        visit(n)
    assert not cycles, cycles
