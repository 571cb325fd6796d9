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
