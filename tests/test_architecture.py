"""The layout of docs/architecture.md, enforced: imports go from the scripts to toolkit/ to modules/
(and sync_batchnorm/), never back; no module imports an entry-point script; no import cycles; no
code outside the family registry compares against a family's name."""
import ast

from modules.families import REGISTRY
from tests.conftest import REPO

LAYERS = {'modules': 0, 'sync_batchnorm': 0, 'toolkit': 1}  # a package may import only its layer or lower


def python_files():
    skip = {'tests', '.git', 'log', 'data'}
    return sorted(p for p in REPO.rglob('*.py') if not (set(p.relative_to(REPO).parts) & skip))


def module_name(path):
    parts = list(path.relative_to(REPO).with_suffix('').parts)
    if parts[-1] == '__init__':
        parts = parts[:-1]
    return '.'.join(parts)


def imports(path):
    """(line, imported module) of every import statement in the file, at any depth (module level or
    inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f'{node.module}.{alias.name}') for alias in node.names]
    return found


def entry_points():
    """Top-level scripts: files in the repository root with a __main__ block."""
    return {p.stem for p in REPO.glob('*.py') if "if __name__ == '__main__'" in p.read_text()}


def project_modules():
    return {module_name(p): p for p in python_files()}


def test_the_root_holds_the_originals_layout_and_the_entry_points():
    root = {p.name for p in REPO.glob('*.py')}
    originals = {'run.py', 'train.py', 'reconstruction.py', 'animate.py', 'demo.py', 'crop-video.py',
                 'frames_dataset.py', 'logger.py', 'augmentation.py'}
    new_entry_points = {'part_swap.py', 'cartoon_faces.py', 'evaluate.py', 'app.py', 'export.py'}
    assert root == originals | new_entry_points
    scripts = entry_points()
    for name in root - {f'{s}.py' for s in scripts}:  # the originals' modules: re-exports only
        tree = ast.parse((REPO / name).read_text())
        body = [n for n in tree.body if not isinstance(n, (ast.Import, ast.ImportFrom, ast.Expr, ast.Assign))]
        assert body == [], f'{name} should only re-export the toolkit\'s names'


def test_imports_point_down_the_layers():
    wrong = []
    for path in python_files():
        layer = LAYERS.get(path.relative_to(REPO).parts[0])
        if layer is None:
            continue
        for line, name in imports(path):
            target = LAYERS.get(name.split('.')[0])
            if target is not None and target > layer:
                wrong.append(f'{path.relative_to(REPO)}:{line} imports {name}')
    assert wrong == []


def test_no_module_imports_an_entry_point_script():
    scripts = entry_points()
    assert {'run', 'demo', 'part_swap', 'cartoon_faces'} <= scripts
    wrong = [f'{path.relative_to(REPO)}:{line} imports {name}' for path in python_files()
             for line, name in imports(path) if name.split('.')[0] in scripts]
    assert wrong == []


def test_tests_import_scripts_only_for_the_originals_api():
    """A test may import from a script only the names in its __all__ (the originals' API); scripts
    are otherwise run as commands."""
    scripts = entry_points() | {p.stem for p in REPO.glob('*.py')}
    wrong = []
    for path in sorted((REPO / 'tests').glob('*.py')):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import) and any(a.name in scripts for a in node.names):
                wrong.append(f'{path.name}:{node.lineno} import {", ".join(a.name for a in node.names)}')
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module in scripts:
                exported = set(_all_of(REPO / f'{node.module}.py'))
                extra = [a.name for a in node.names if a.name not in exported]
                if extra:
                    wrong.append(f'{path.name}:{node.lineno} from {node.module} import {", ".join(extra)}')
    assert wrong == []


def _all_of(path):
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in node.targets):
            return ast.literal_eval(node.value)
    return []


def test_no_import_cycles():
    """Between the project's modules, counting every import (also those inside functions)."""
    modules = project_modules()
    graph = {}
    for name, path in modules.items():
        targets = set()
        for _, imported in imports(path):
            while imported and imported not in modules:
                imported = imported.rpartition('.')[0]
            if imported and imported != name and not name.startswith(imported + '.'):
                targets.add(imported)
        graph[name] = targets
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = 'open'
        for target in sorted(graph[node]):
            if state.get(target) == 'open':
                cycles.append(' -> '.join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack + [target])
        state[node] = 'done'

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_no_family_name_is_compared_outside_the_registry():
    names = set(REGISTRY)
    allowed = {REPO / 'modules' / 'families.py'}
    wrong = []
    for path in python_files():
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Compare):
                continue
            values = [node.left, *node.comparators]
            constants = [c for v in values for c in ([v] if isinstance(v, ast.Constant) else
                                                     getattr(v, 'elts', []) if isinstance(v, (ast.Tuple, ast.List, ast.Set))
                                                     else []) if isinstance(c, ast.Constant)]
            if any(c.value in names for c in constants):
                wrong.append(f'{path.relative_to(REPO)}:{node.lineno} {ast.unparse(node)}')
    assert wrong == []
