"""Starting the service in a process of its own for the benchmarks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx2


@contextmanager
def serving(home: str, database_url: str, port: int) -> Iterator[str]:
    """``secm serve`` on ``port`` until the block ends; its base URL once it answers."""
    env = {**os.environ, "SECM_HOME": home, "SECM_DATABASE_URL": database_url}
    server = subprocess.Popen(
        [sys.executable, "-m", "secm.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx2.get(f"{base}/health")
                break
            except httpx2.TransportError:
                time.sleep(0.1)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=10)
