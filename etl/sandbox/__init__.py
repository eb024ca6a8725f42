"""A faithful stand-in for Tencent's follow API, for the demo, the tests and the benchmarks."""

from etl.sandbox.app import Sandbox
from etl.sandbox.config import SandboxConfig
from etl.sandbox.graph import Graph
from etl.sandbox.response import SandboxResponse
from etl.sandbox.server import SandboxServer, serve_in_thread

__all__ = [
    "Graph",
    "Sandbox",
    "SandboxConfig",
    "SandboxResponse",
    "SandboxServer",
    "serve_in_thread",
]
