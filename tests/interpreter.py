"""Python run in a fresh interpreter, for what happens as a process starts: what it imports,
and what its environment makes of the libraries it loads."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).parents[1]


def fresh_output(program: str | Path, environment: Mapping[str, str | None] | None = None) -> str:
    """The standard output, stripped, of ``program`` (code, or a script's path) run by a fresh
    interpreter that imports the project, in this process's environment changed by
    ``environment`` (``None``: the variable is unset). Fails the test if the program fails."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for name, value in (environment or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    command = [sys.executable, str(program)] if isinstance(program, Path) else [sys.executable, "-c", program]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()
