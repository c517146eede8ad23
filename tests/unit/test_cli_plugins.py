"""``mpn-nas`` subcommands come from the ``mpn_nas.commands`` entry-point group; mpn_nas names no layer above it."""
import ast
import importlib.metadata

from helpers import REPO
from mpn_nas.cli import COMMANDS_GROUP, main


def test_a_third_party_package_adds_a_subcommand(tmp_path, monkeypatch, capsys):
    (tmp_path / "hello_plugin.py").write_text(
        "def register(commands):\n"
        "    hello = commands.add_parser('hello', help='say hello')\n"
        "    hello.add_argument('--name', default='world')\n"
        "    hello.set_defaults(handler=lambda args: print(f'hello {args.name}') or 0)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = importlib.metadata.entry_points

    def entry_points(**selection):
        found = list(installed(**selection))
        if selection.get("group") == COMMANDS_GROUP:
            found.append(importlib.metadata.EntryPoint("hello", "hello_plugin:register", COMMANDS_GROUP))
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    assert main(["hello", "--name", "plugin"]) == 0
    assert capsys.readouterr().out == "hello plugin\n"



def test_the_installed_entry_points_provide_search_trial_and_export_space():
    names = {entry.name for entry in importlib.metadata.entry_points(group=COMMANDS_GROUP)}
    assert {"search", "spaces"} <= names


def test_mpn_nas_imports_nothing_from_the_layers_above_it():
    above = ("strategies", "search_spaces", "benchmarks")
    for path in sorted((REPO / "mpn_nas").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = [node.value] if node.value.split(".")[0] in above and "." in node.value else []
            assert not [n for n in names if n.split(".")[0] in above], f"{path.relative_to(REPO)} names {names}"
