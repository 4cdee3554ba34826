"""The clean stage's parts: config, contract checks, Rust calls, stage, stats."""
from data_tools.cleaning.config import CleanConfig, load_config
from data_tools.cleaning.stage import CleanResult, clean_dialogues
from data_tools.cleaning.stats import CleanStats

__all__ = ["CleanConfig", "CleanResult", "CleanStats", "clean_dialogues", "load_config"]
