"""Pipeline configuration: the YAML schema and its loader."""

from .loader import PipelineConfig, load_config

__all__ = ["PipelineConfig", "load_config"]
