"""``TARGET`` on the command line: the workflow named by ``module:attr`` or ``file.py[:attr]``.

A target is a workflow (``with workflow(...) as wf``), a ``TaskGraph``, a task expression,
or a function that returns one of those when called without arguments. ``file.py`` alone
names the one workflow the file defines at top level, or else its ``build()`` function.
Like ``python -m``, the commands that import targets put the working directory first on
``sys.path`` (``put_working_directory_on_path``), so ``pkg.module:attr`` finds modules there.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from graflow.core import codec
from graflow.core.graph import TaskGraph
from graflow.core.task import Executable, SequentialTask
from graflow.core.workflow import WorkflowContext
from graflow.exceptions import ConfigError

__all__ = ["graph_of", "load_target", "put_working_directory_on_path"]

_BUILD = "build"
# Return annotations that can name a workflow (with `from __future__ import annotations`
# they are strings); a factory annotated with anything else is refused before it is called.
_WORKFLOW_TYPES = ("WorkflowContext", "TaskGraph", "Executable", "ParallelGroup", "Task")


def put_working_directory_on_path() -> None:
    """Make modules in the working directory importable, as ``python -m`` does.

    A supervisor does this before it starts its workers, which inherit the path (fork) or
    are handed it (spawn), so they import a producer's ``pkg.module`` tasks the same way.
    """
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _load_module(spec: str, path_part: str) -> Any:
    if not (path_part.endswith(".py") or "/" in path_part):
        try:
            return importlib.import_module(path_part)
        except ImportError as exc:
            raise ConfigError(
                f"TARGET {spec!r}: cannot import {path_part!r}: {exc} (modules are found "
                f"from the working directory {os.getcwd()!r} and PYTHONPATH)"
            ) from exc
        except Exception as exc:
            raise _import_failure(spec, path_part, exc) from exc
    path = Path(path_part)
    if not path.is_file():
        raise ConfigError(f"TARGET {spec!r}: no such file {path_part!r}")
    module_spec = importlib.util.spec_from_file_location(f"graflow_target_{path.stem}", path)
    if module_spec is None or module_spec.loader is None:
        raise ConfigError(f"TARGET {spec!r}: cannot load {path_part!r}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    sys.path.insert(0, str(path.resolve().parent))
    # Workers cannot import a module loaded from a path: its tasks travel by value.
    codec.register_by_value(module_spec.name)
    try:
        module_spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_spec.name, None)
        raise _import_failure(spec, path_part, exc) from exc
    return module


def _import_failure(spec: str, path_part: str, exc: Exception) -> ConfigError:
    """One line saying why ``path_part`` did not load: the file, the line and the error."""
    if isinstance(exc, SyntaxError):
        where = f"{exc.filename}, line {exc.lineno}" if exc.filename else path_part
        return ConfigError(f"TARGET {spec!r}: syntax error in {where}: {exc.msg}")
    frames = traceback.extract_tb(exc.__traceback__)
    last = frames[-1] if frames else None
    where = f" ({last.filename}, line {last.lineno})" if last is not None else ""
    return ConfigError(
        f"TARGET {spec!r}: loading {path_part!r} raised {type(exc).__name__}: {exc}{where}"
    )


def _is_workflow(value: Any) -> bool:
    return isinstance(value, WorkflowContext | TaskGraph | Executable)


def _refuse_by_annotation(spec: str, factory: Any) -> None:
    """ConfigError when ``factory`` is annotated to return something other than a workflow
    (calling ``main()`` of a script would run its workflow instead of building it)."""
    try:
        returns = inspect.signature(factory).return_annotation
    except (TypeError, ValueError):
        return
    if returns is inspect.Signature.empty:
        return
    text = returns if isinstance(returns, str) else getattr(returns, "__name__", repr(returns))
    if not any(name in text for name in _WORKFLOW_TYPES):
        raise ConfigError(
            f"TARGET {spec!r} returns {text}, not a workflow: name a function that builds the "
            "workflow and returns it (with workflow(...) as wf: ...; return wf), or the "
            "workflow itself"
        )


def _call_factory(spec: str, factory: Any) -> Any:
    _refuse_by_annotation(spec, factory)
    try:
        made = factory()
    except TypeError as exc:
        if "argument" not in str(exc):
            raise
        raise ConfigError(f"TARGET {spec!r} must be callable without arguments: {exc}") from exc
    if not _is_workflow(made):
        raise ConfigError(
            f"TARGET {spec!r} returned {type(made).__name__}, not a workflow: name a function "
            "that returns the workflow (with workflow(...) as wf: ...; return wf)"
        )
    return made


def _attribute(spec: str, module: Any, path_part: str, attr: str) -> Any:
    try:
        target = module
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise ConfigError(f"TARGET {spec!r}: {path_part!r} has no attribute {attr!r}") from None
    if _is_workflow(target):
        return target
    if callable(target):
        return _call_factory(spec, target)
    raise ConfigError(
        f"TARGET {spec!r} is a {type(target).__name__}, not a workflow or a function "
        "that returns one"
    )


def load_target(spec: str) -> Any:
    """The workflow named by ``module:attr``, ``file.py:attr`` or ``file.py``.

    An ``attr`` that is a plain callable (a factory) is called; ``file.py`` alone must
    define exactly one workflow at top level, or a ``build()`` function. ConfigError,
    naming TARGET and what to write instead, when nothing fits.
    """
    path_part, _, attr = spec.partition(":")
    module = _load_module(spec, path_part)
    if attr:
        return _attribute(spec, module, path_part, attr)
    found = [v for v in vars(module).values() if isinstance(v, WorkflowContext)]
    if len(found) == 1:
        return found[0]
    if not found and callable(getattr(module, _BUILD, None)):
        return _call_factory(f"{spec}:{_BUILD}", getattr(module, _BUILD))
    names = [v.name for v in found]
    raise ConfigError(
        f"TARGET {spec!r}: expected one workflow at the file's top level or a build() "
        f"function, found {len(found)} workflows {names}; name one as FILE.py:ATTR"
    )


def graph_of(target: Any) -> TaskGraph:
    """The graph of a loaded target (a workflow, a graph or a task expression)."""
    if isinstance(target, WorkflowContext):
        return target.graph
    if isinstance(target, TaskGraph):
        return target
    entry = target.leftmost if isinstance(target, SequentialTask) else target
    graph = entry._workflow_graph if isinstance(entry, Executable) else None
    if graph is None:
        raise ConfigError(f"cannot draw {target!r}: it belongs to no workflow")
    return graph
