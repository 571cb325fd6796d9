"""The package's rooms and the one direction their imports go: rules, then Redis access, then the
gate, the signaling cluster, the sweep and the cascade, then operations, then the app. A change
that makes a lower room import a higher one fails here, before it tangles the house."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "reaper"
RANK = {"core": 0, "logs": 1, "terminal": 1, "store": 2, "safety": 3, "signaling": 4, "sweep": 5,
        "cascade": 5, "ops": 6, "app": 7, "demo": 7, "__main__": 8, "__init__": 0}
CLIENT_LIBRARIES = {"redis", "httpx", "pymongo", "loguru", "prometheus_client", "click", "msgpack"}
MODULES = sorted(p for p in PACKAGE.rglob("*.py"))


def room_of(path: Path) -> str:
    return path.relative_to(PACKAGE).with_suffix("").parts[0]


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports, by its full name (``from reaper import x`` is reaper.x)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import; the rooms use absolute ones"
            if node.module == "reaper":
                found += [f"reaper.{alias.name}" for alias in node.names]
            else:
                found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
    return found


def upward(path: Path) -> list[str]:
    room = room_of(path)
    wrong = []
    for name in imports(path):
        parts = name.split(".")
        if parts[0] != "reaper" or len(parts) < 2:
            continue
        target = parts[1]
        if RANK[target] > RANK[room] or (target != room and RANK[target] == RANK[room] == RANK["sweep"]):
            wrong.append(name)
    return wrong


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_rooms_below_its_own(path):
    assert upward(path) == []


@pytest.mark.parametrize("path", [p for p in MODULES if room_of(p) == "core"],
                         ids=lambda p: p.name)
def test_the_rules_import_no_client_library(path):
    clients = {name for name in imports(path) if name.split(".")[0] in CLIENT_LIBRARIES}
    assert clients == set()


def test_every_room_says_what_lives_there():
    rooms = [p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()]
    assert {p.name for p in rooms} == {"core", "store", "safety", "signaling", "sweep", "cascade",
                                       "ops", "app", "demo"}
    for room in rooms:
        docstring = ast.get_docstring(ast.parse((room / "__init__.py").read_text()))
        assert docstring and len(docstring.split()) >= 12, room.name


def test_the_package_root_holds_only_the_rooms_and_what_every_room_writes_through():
    assert {p.name for p in PACKAGE.glob("*.py")} == {"__init__.py", "__main__.py", "logs.py",
                                                      "terminal.py"}


def test_the_checker_sees_an_upward_import(tmp_path, monkeypatch):
    fake = tmp_path / "reaper"
    (fake / "core").mkdir(parents=True)
    module = fake / "core" / "bad.py"
    module.write_text("from reaper.app.cli import main\nfrom reaper.core import keys\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", fake)
    assert upward(module) == ["reaper.app.cli"]


CLASS_LINES_MAX, CLASS_METHODS_MAX = 250, 20


def classes(path: Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ClassDef):
            methods = sum(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) for item in node.body)
            yield node.name, node.end_lineno - node.lineno + 1, methods


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_class_holds_too_much_at_once(path):
    big = [(name, lines, methods) for name, lines, methods in classes(path)
           if lines > CLASS_LINES_MAX or methods > CLASS_METHODS_MAX]
    assert big == []


def branches_on_cluster(path: Path) -> list[int]:
    """Lines of an ``if`` or conditional expression whose test names a cluster: the choice
    between a single Redis and a Redis Cluster is made once, where the sweep or cascade starts."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, (ast.If, ast.IfExp, ast.While)):
            names = {n.id for n in ast.walk(node.test) if isinstance(n, ast.Name)}
            names |= {n.attr for n in ast.walk(node.test) if isinstance(n, ast.Attribute)}
            if any("cluster" in name.lower() for name in names):
                found.append(node.lineno)
    return found


@pytest.mark.parametrize("path", [p for p in MODULES if room_of(p) in ("sweep", "cascade")],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_sweep_and_the_cascade_do_not_branch_on_cluster_or_not(path):
    assert branches_on_cluster(path) == []


def test_the_cluster_check_sees_a_branch(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("def f(client):\n    if client.is_cluster:\n        return 1\n"
                      "    return 2 if isinstance(client, RedisCluster) else 3\n")
    assert branches_on_cluster(module) == [2, 4]


TESTS = Path(__file__).resolve().parent


def private_patches(path: Path) -> list[str]:
    """``setattr``/``patch``/``patch.object`` calls that reach a name starting with "_": a test
    that needs a race injects it through a named seam, not by patching reaper's insides."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        called = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        if called not in ("setattr", "patch", "object", "delattr"):
            continue
        for arg in node.args[:2]:
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                if any(part.startswith("_") and not part.startswith("__") or part == "__init__"
                       for part in arg.value.split(".")):
                    found.append(f"{path.name}:{node.lineno}: {arg.value}")
    return found


def test_no_test_patches_a_private_name():
    patched = [hit for path in sorted(TESTS.rglob("*.py")) if "node_modules" not in path.parts
               for hit in private_patches(path)]
    assert patched == []


def test_the_patch_check_sees_a_private_patch(tmp_path):
    module = tmp_path / "test_x.py"
    module.write_text('def test(monkeypatch):\n    monkeypatch.setattr(Sweep, "_reap", None)\n'
                      '    monkeypatch.setattr("reaper.store.client._load", None)\n'
                      '    monkeypatch.setattr(Sweep, "__init__", None)\n'
                      '    monkeypatch.setattr(store, "load_records", None)\n')
    assert private_patches(module) == ["test_x.py:2: _reap", "test_x.py:3: reaper.store.client._load",
                                       "test_x.py:4: __init__"]
