"""research/'s imports form layers without cycles (STYLE.md: "a function-local import that hides
a cycle is a cycle"). Read with `ast` only: nothing under research/ is imported, so no JAX."""

from __future__ import annotations

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]

# Lowest first. A module may import its own layer and the layers below, never one above. The
# unit is research's top-level subpackage or module; "research" is the package's __init__.
LAYERS = (
    ("research", "config", "presets", "hardware", "distributed"),  # data, and the environment
    ("tokenizers", "checkpoint"),  # files: tokenizers; orbax checkpoints + config.json
    ("data",),
    ("layers",),
    ("models",),
    ("hf", "peft"),
    ("pretrained",),  # trained parameters from a reference: run, PEFT run or adapter, HF dir
    ("train", "inference", "sharding"),  # sharding.plan lays out train.state.TrainState
    ("analysis", "generate", "gqa"),
    ("sweeps",),
)


def module_graph(root: pathlib.Path, package: str) -> dict[str, dict[str, int]]:
  """module -> {module of `package` it imports: line of the first such import}.

  Every import statement counts, function-local ones included. `from p import x` imports the
  submodule p.x when there is one, else p; a package stands for its __init__.
  """
  files = {}
  for path in sorted((root / package).rglob("*.py")):
    parts = path.relative_to(root).with_suffix("").parts
    files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

  def known(name: str) -> str | None:  # the longest prefix of `name` that is a module
    parts = name.split(".")
    while parts and ".".join(parts) not in files:
      parts.pop()
    return ".".join(parts) or None

  graph: dict[str, dict[str, int]] = {}
  for module, path in files.items():
    is_package = path.name == "__init__.py"
    edges = graph[module] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
      if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
          here = module.split(".")[:len(module.split(".")) - (node.level - (1 if is_package else 0))]
          base = ".".join(here + ([node.module] if node.module else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                 for alias in node.names]
      else:
        continue
      for name in names:
        target = known(name)
        if target is not None and target != module:
          edges.setdefault(target, node.lineno)
  return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
  """The strongly connected components of more than one module (Tarjan), each sorted."""
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  on_stack: set[str] = set()
  found = []

  def visit(v: str) -> None:
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph[v]:
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while not component or component[-1] != v:
        component.append(stack.pop())
        on_stack.discard(component[-1])
      if len(component) > 1:
        found.append(sorted(component))

  for v in sorted(graph):
    if v not in index:
      visit(v)
  return found


def describe(graph: dict[str, dict[str, int]], component: list[str]) -> str:
  inside = set(component)
  return "\n  ".join(f"{a} -> {b} (line {line})" for a in component
                     for b, line in sorted(graph[a].items()) if b in inside)


def unit(module: str) -> str:
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else parts[0]


def layer_violations(graph, layers) -> list[str]:
  rank = {name: i for i, names in enumerate(layers) for name in names}
  return [f"{a} (layer {rank[unit(a)]}) imports {b} (layer {rank[unit(b)]}), line {line}"
          for a, edges in sorted(graph.items()) for b, line in sorted(edges.items())
          if rank[unit(a)] < rank[unit(b)]]


GRAPH = module_graph(ROOT, "research")


def test_research_has_no_import_cycles():
  found = cycles(GRAPH)
  assert not found, "import cycles (function-local imports included):\n" + "\n".join(
      f"{c}:\n  {describe(GRAPH, c)}" for c in found)


def test_every_unit_has_a_layer():
  declared = {name for names in LAYERS for name in names}
  assert {unit(m) for m in GRAPH} == declared


def test_a_lower_layer_never_imports_a_higher_one():
  assert not layer_violations(GRAPH, LAYERS)


def test_the_graph_sees_the_imports_of_research():
  # Resolution checks against the real tree: a submodule named in `from p import x`, a
  # package (its __init__), a function-local import, a relative import.
  assert "research.train.losses" in GRAPH["research.train.encoder_objectives"]
  assert "research.checkpoint" in GRAPH["research.pretrained"]
  assert "research.hf" in GRAPH["research.pretrained"]  # imported inside load()
  assert "research.config.model" in GRAPH["research.models.registry"]


def _package(tmp_path, files: dict[str, str]) -> dict[str, dict[str, int]]:
  for name, text in {"__init__.py": "", **files}.items():
    (tmp_path / "pkg" / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "pkg" / name).write_text(text)
  return module_graph(tmp_path, "pkg")


def test_a_cycle_hidden_in_a_function_is_reported(tmp_path):
  graph = _package(tmp_path, {
      "a.py": "def f():\n  from pkg import b\n  return b\n",
      "b.py": "import pkg.a\n",
      "c.py": "from pkg.a import f\n",  # imports into the cycle, not part of it
  })
  assert cycles(graph) == [["pkg.a", "pkg.b"]]
  assert describe(graph, ["pkg.a", "pkg.b"]) == "pkg.a -> pkg.b (line 2)\n  pkg.b -> pkg.a (line 1)"


def test_a_cycle_through_relative_imports_and_a_package_init_is_reported(tmp_path):
  graph = _package(tmp_path, {
      "low/__init__.py": "from .impl import g\n",
      "low/impl.py": "from ..high import h\n",
      "high.py": "from pkg import low\n",
  })
  assert cycles(graph) == [["pkg.high", "pkg.low", "pkg.low.impl"]]


def test_a_lower_layer_importing_a_higher_one_is_reported(tmp_path):
  graph = _package(tmp_path, {"low.py": "def f():\n  import pkg.high\n", "high.py": "import pkg.low\n"})
  assert layer_violations(graph, (("pkg", "low"), ("high",))) == [
      "pkg.low (layer 0) imports pkg.high (layer 1), line 2"]
  assert layer_violations(graph, (("pkg", "high"), ("low",))) == [
      "pkg.high (layer 0) imports pkg.low (layer 1), line 1"]
