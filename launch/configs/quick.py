"""The `quick` preset as a file for `--config=launch/configs/quick.py`: its
settings live in the library (`bcjax.runs.configs.quick`)."""

from bcjax.runs.configs.quick import get_config

__all__ = ["get_config"]
