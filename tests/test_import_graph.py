"""secureml's modules import each other in one direction: no module, by importing another,
ends up importing itself again (bench/import_graph.py prints the graph and the counts)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "import_graph.py"


def _import_graph_tool():
    spec = importlib.util.spec_from_file_location("secureml_import_graph", BENCH)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = _import_graph_tool()


def test_secureml_modules_import_each_other_without_a_cycle():
    graph = tool.import_graph()
    assert "secureml.scenario" in graph and "secureml.loader" in graph, "the graph missed the package"
    assert tool.cycles(graph) == []


def test_no_import_inside_a_function_hides_a_cycle():
    """A function-level import that closes a circle still ties the modules together; only a
    module's `__getattr__` (an old name resolved on first use) may point back."""
    assert tool.cycles(tool.import_graph(function_level=True)) == []


def test_the_scenario_schema_imports_neither_its_loader_nor_the_families():
    graph = tool.import_graph(function_level=True)
    reachable, todo = set(), ["secureml.scenario"]
    while todo:
        for target in graph[todo.pop()] - reachable:
            reachable.add(target)
            todo.append(target)
    assert not {"secureml.loader", "secureml.families"} & reachable


def test_the_cycle_finder_finds_a_cycle_through_three_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert tool.cycles(graph) == [["a", "b", "c"]]
