"""The `paper` preset as a file for `--config=launch/configs/paper.py`: its
settings live in the library (`bcjax.runs.configs.paper`)."""

from bcjax.runs.configs.paper import get_config

__all__ = ["get_config"]
