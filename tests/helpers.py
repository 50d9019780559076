"""Helpers shared by the tests."""

from regbench.config import RunConfig
from regbench.techniques import parse_setting, resolve_params


def config_for(setting: str, overrides: dict | None = None, **fields) -> RunConfig:
    """Return a tiny run config (300 images, 1 epoch unless told) for a technique setting."""
    names = parse_setting(setting)
    params = resolve_params(names, overrides or {})
    return RunConfig(**{"train_size": 300, "epochs": 1, **fields},
                     technique="+".join(names), technique_params=params)
