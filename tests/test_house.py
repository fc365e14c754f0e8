"""The house rules of fglib's code: the method never imports the book, nothing imports in a
cycle, and one registry names every method (no registration by import side effect)."""
import ast
import pathlib

import fglib
from fglib import registry

ROOT = pathlib.Path(fglib.__file__).parent


def module_name(path):
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path):
    """The fglib modules `path` imports, anywhere in it (function-level imports count too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("fglib")}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = node.module if node.level == 0 else ".".join(p for p in (base, node.module) if p)
            if not target or not target.startswith("fglib"):
                continue
            for alias in node.names:   # `from . import checks` imports the module fglib.checks
                sub = f"{target}.{alias.name}"
                found.add(sub if (ROOT.parent / sub.replace(".", "/")).with_suffix(".py").exists()
                          or (ROOT.parent / sub.replace(".", "/")).is_dir() else target)
    return found - {name}


def graph():
    return {module_name(p): imports(p) for p in ROOT.rglob("*.py")}


def cycles(edges):
    """Every module that lies on an import cycle (edges into a package's __init__ aside: a
    package importing its own modules is how Python packages work)."""
    edges = {m: {t for t in ts if t in edges and not m.startswith(t + ".")} for m, ts in edges.items()}
    on_cycle, state = set(), {}

    def visit(m, path):
        state[m] = "open"
        for t in edges[m]:
            if state.get(t) == "open":
                on_cycle.update(path[path.index(t):])
            elif t not in state:
                visit(t, path + [t])
        state[m] = "done"
    for m in edges:
        if m not in state:
            visit(m, [m])
    return on_cycle


def test_the_method_package_imports_nothing_from_the_book():
    offenders = {m: sorted(t for t in ts if t.startswith("fglib.book")) for m, ts in graph().items()
                 if not m.startswith("fglib.book")}
    assert not {m: ts for m, ts in offenders.items() if ts}


def test_nothing_in_fglib_imports_in_a_cycle():
    assert not cycles(graph())


def test_the_cycle_finder_finds_a_cycle():   # the control
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {"a", "b", "c"}


def test_one_registry_names_every_method_with_its_label_and_class():
    from fglib.methods import Method
    assert set(registry.METHODS) == {"fg", "fg_inplace", "bp", "bp_ckpt", "bp_inplace", "fd", "fd_inplace", "fg_a", "local_fg", "local_fg_a",
                                   "local_bp"}
    for name, cls in registry.METHODS.items():
        assert issubclass(cls, Method) and registry.LABELS[name] == cls.name == registry.label(name)
    assert len(set(registry.LABELS.values())) == len(registry.LABELS)   # no two methods share a label


def registrations(source):
    """Places that add to a METHODS table: METHODS.update(...), METHODS[...] = ..., METHODS.setdefault."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "update", "setdefault") and getattr(node.func.value, "id", None) == "METHODS":
            found.append(node.lineno)
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [node.lineno for t in targets if isinstance(t, ast.Subscript) and getattr(t.value, "id", None) == "METHODS"]
    return found


def test_no_module_registers_a_method_as_a_side_effect():
    assert sorted(registrations("METHODS.update(fd=1)\nMETHODS['x'] = 2")) == [1, 2]   # the control
    assert {p.name: registrations(p.read_text()) for p in ROOT.rglob("*.py") if registrations(p.read_text())} == {}


def test_no_name_is_used_that_was_never_defined_or_imported():
    """pyflakes' undefined names over fglib and tools: a path that only runs on a GPU (an
    allocator's peak, a synchronisation) cannot hide a NameError from a CPU-only test run.
    The control: a snippet with an undefined name is caught."""
    from pyflakes import api, messages, reporter

    class Collect(reporter.Reporter):
        def __init__(self):
            self.found = []

        def flake(self, message):
            if isinstance(message, messages.UndefinedName):
                self.found.append(str(message))

        def unexpectedError(self, filename, message):
            self.found.append(f"{filename}: {message}")

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.found.append(f"{filename}:{lineno}: {msg}")

    control = Collect()
    api.check("def f():\n    synchronize(0)\n", "control.py", control)
    assert control.found, "the control must fail"
    found = Collect()
    for path in [*ROOT.rglob("*.py"), *(ROOT.parent / "tools").glob("*.py")]:
        api.check(path.read_text(), str(path), found)
    assert not found.found, found.found
