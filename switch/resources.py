"""Where the shipped data lives: `codecs/` (dialects) and `conf/` (the demo set).

In a source checkout or an editable install they sit beside the packages; in an
installed wheel they are copied into `switch/_data/` (see pyproject.toml). Both
are looked up here so nothing else has to know.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the directory of shipped data `name` ("codecs" or "conf")."""
    for candidate in (_PACKAGE / "_data" / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"airswitch data directory {name!r} not found beside {_PACKAGE}")


def demo_config() -> Path:
    """The demo configuration file shipped with airswitch."""
    return data_dir("conf") / "demo" / "airswitch.toml"
