"""Pieces shared by the CLI subcommands: settings overrides from flags, error reporting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from corpus.settings import Settings, settings


def settings_with(**overrides: Any) -> Settings:
    """The global settings with the given CLI flags applied (flags left at None are ignored).

    :raises click.ClickException: when a flag's value is invalid.
    """
    values = {key: value for key, value in overrides.items() if value is not None}
    if not values:
        return settings
    try:
        return Settings(**{**settings.model_dump(), **values})
    except ValidationError as error:
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise click.ClickException(details) from None


index_dir_option = click.option(
    "--index-dir", type=click.Path(path_type=Path), default=None,
    help="index directory (default: settings.index.index_dir, env POLICYQA_INDEX_DIR)",
)
