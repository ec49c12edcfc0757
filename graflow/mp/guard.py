"""The ``if __name__ == "__main__":`` guard that spawned worker processes need (#18).

With the spawn start method (macOS and Windows by default, ``start_method="spawn"``
anywhere) every worker imports the main script again. A script that starts a pool at its
top level, outside the guard, would start one in every worker, and the workers die while
starting. ``check_main_guard`` finds that before any worker starts: it walks the caller's
stack to the main script's top-level frame and checks, with the script's syntax tree,
whether the line running there sits inside ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path
from types import FrameType

from graflow.exceptions import ConfigError

__all__ = ["check_main_guard"]


def _is_main_test(node: ast.expr) -> bool:
    if not isinstance(node, ast.Compare) or len(node.ops) != 1:
        return False
    if not isinstance(node.ops[0], ast.Eq):
        return False
    sides = [node.left, *node.comparators]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    mains = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return bool(names and mains)


def _is_guarded(tree: ast.Module, line: int) -> bool:
    """True if ``line`` lies in the body of an ``if __name__ == "__main__":``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_main_test(node.test) and node.body:
            first, last = node.body[0].lineno, node.body[-1].end_lineno or node.lineno
            if first <= line <= last:
                return True
    return False


def _top_level_frame(main_globals: dict[str, object]) -> FrameType | None:
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
            return frame
        frame = frame.f_back
    return None


def check_main_guard(start_method: str) -> None:
    """ConfigError, in one line, when a spawn pool is started by a script's top-level code
    outside ``if __name__ == "__main__":``; nothing in any other case."""
    if start_method != "spawn":
        return
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if main is None or not path or not str(path).endswith(".py"):
        return  # python -c, a REPL, a frozen app: nothing a worker would re-import
    frame = _top_level_frame(vars(main))
    if frame is None:
        return  # started from a function the script's own guard called
    try:
        tree = ast.parse(Path(path).read_text(), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return
    if _is_guarded(tree, frame.f_lineno):
        return
    raise ConfigError(
        f"{path}, line {frame.f_lineno}: the process pool starts when the script is imported, "
        "and spawned workers import it again; put that code under "
        'if __name__ == "__main__":'
    )
