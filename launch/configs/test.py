"""The `test` preset as a file for `--config=launch/configs/test.py`: its
settings live in the library (`bcjax.runs.configs.test`)."""

from bcjax.runs.configs.test import get_config

__all__ = ["get_config"]
