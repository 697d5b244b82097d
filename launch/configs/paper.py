"""The `paper` preset as a file for `--config=launch/configs/paper.py`: its
settings live in the library (`bcjax.configs.paper`)."""

from bcjax.configs.paper import get_config

__all__ = ["get_config"]
