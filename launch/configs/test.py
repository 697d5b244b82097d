"""The `test` preset as a file for `--config=launch/configs/test.py`: its
settings live in the library (`bcjax.configs.test`)."""

from bcjax.configs.test import get_config

__all__ = ["get_config"]
