"""A faithful stand-in for Tencent's follow API, for the demo, the tests and the benchmarks.

Its names are imported when first used (PEP 562): the command line reads the fault kinds
(etl.sandbox.faults) for its help without loading the server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from etl.sandbox.app import Sandbox
    from etl.sandbox.config import SandboxConfig
    from etl.sandbox.graph import Graph
    from etl.sandbox.response import SandboxResponse
    from etl.sandbox.server import SandboxServer, serve_in_thread

_HOMES = {
    "Graph": "etl.sandbox.graph",
    "Sandbox": "etl.sandbox.app",
    "SandboxConfig": "etl.sandbox.config",
    "SandboxResponse": "etl.sandbox.response",
    "SandboxServer": "etl.sandbox.server",
    "serve_in_thread": "etl.sandbox.server",
}
__all__ = [
    "Graph",
    "Sandbox",
    "SandboxConfig",
    "SandboxResponse",
    "SandboxServer",
    "serve_in_thread",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'etl.sandbox' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
