"""``TARGET`` on the command line: the workflow named by ``module:attr`` or ``file.py[:attr]``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path
from typing import Any

from graflow.core import codec
from graflow.core.workflow import WorkflowContext
from graflow.exceptions import ConfigError

__all__ = ["load_target"]


def _load_module(spec: str, path_part: str) -> Any:
    if not (path_part.endswith(".py") or "/" in path_part):
        try:
            return importlib.import_module(path_part)
        except ImportError as exc:
            raise ConfigError(f"TARGET {spec!r}: cannot import {path_part!r}: {exc}") from exc
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


def load_target(spec: str) -> Any:
    """The workflow named by ``module:attr``, ``file.py:attr`` or ``file.py``.

    An ``attr`` that is a plain callable (a factory) is called; ``file.py`` alone must
    define exactly one workflow. ConfigError, naming TARGET, when nothing fits.
    """
    path_part, _, attr = spec.partition(":")
    module = _load_module(spec, path_part)
    if attr:
        try:
            target = module
            for part in attr.split("."):
                target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"TARGET {spec!r}: {path_part!r} has no attribute {attr!r}") from None
        return target() if callable(target) and not hasattr(target, "graph") else target
    found = [v for v in vars(module).values() if isinstance(v, WorkflowContext)]
    if len(found) != 1:
        names = [v.name for v in found]
        raise ConfigError(
            f"TARGET {spec!r}: expected one workflow in the file, found {len(found)} {names}; "
            "name it as FILE.py:ATTR"
        )
    return found[0]
