"""Declarative ML workflows (`.dstack/workflows.yaml`) from Python, on the dstack-rs engine."""

from dstack_py._core import __version__, plan_json

__all__ = ["__version__", "plan_json"]
