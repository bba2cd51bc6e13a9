"""Where per-user files live: the user config file and the CLI's data folder (its conversation log).

- user config file: `$ZEPH_PROVIDERS_CONFIG_HOME/zeph.toml` when that variable is set, else
  `platformdirs.user_config_dir("zeph-providers")/zeph.toml` (`~/.config/zeph-providers/zeph.toml`
  on Linux), else, without platformdirs (it ships in the `local` extra), `$XDG_CONFIG_HOME` or
  `~/.config`, the same folder platformdirs picks on Linux.
- data folder: `$ZEPH_PROVIDERS_DATA_DIR`, else `platformdirs.user_data_dir("zeph-providers")`,
  else `$XDG_DATA_HOME` or `~/.local/share`, plus `zeph-providers`.

The environment overrides exist so tests (and sandboxes) never touch the real home folder.
Standard library only; platformdirs is imported on call.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["APP_NAME", "USER_CONFIG_NAME", "user_config_file", "user_data_dir"]

APP_NAME = "zeph-providers"
USER_CONFIG_NAME = "zeph.toml"


def _platform_dir(kind: str, xdg: str, fallback: str) -> Path:
    try:
        import platformdirs
    except ImportError:
        base = os.environ.get(xdg) or str(Path.home() / fallback)
        return Path(base) / APP_NAME
    if kind == "config":
        return Path(platformdirs.user_config_dir(APP_NAME))
    return Path(platformdirs.user_data_dir(APP_NAME))


def user_config_file() -> Path:
    """The per-user config file (it may not exist)."""
    override = os.environ.get("ZEPH_PROVIDERS_CONFIG_HOME")
    folder = Path(override) if override else _platform_dir("config", "XDG_CONFIG_HOME", ".config")
    return folder / USER_CONFIG_NAME


def user_data_dir() -> Path:
    """The CLI's data folder (it may not exist)."""
    override = os.environ.get("ZEPH_PROVIDERS_DATA_DIR")
    return Path(override) if override else _platform_dir("data", "XDG_DATA_HOME", ".local/share")
