"""`policyqa audit`: print the audit log of admin actions (ui.audit)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ui.cli_common import settings_with


def _cell(value, width: int) -> str:
    text = " ".join(str(value if value is not None else "-").split())
    return text if len(text) <= width else text[: width - 1] + "…"


@click.command()
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="newest entries to show")
@click.option("--action", default=None, help="only this action (upload, replace, remove, reindex, ...)")
@click.option("--json", "as_json", is_flag=True, help="print the entries as a JSON array")
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="audit database (default: settings.service.audit_db, else data_dir/audit.sqlite3)",
)
def audit(limit: int, action: str | None, as_json: bool, db: Path | None) -> None:
    """List admin actions on the knowledge base, newest first: time (UTC), client
    address (or cli:<user>@<host> for `policyqa add` and `remove`), action, document, HTTP
    status and result (refused attempts included).

    Examples:

    \b
        policyqa audit
        policyqa audit --action remove --limit 10
        policyqa audit --json
    """
    import sqlite3

    from ui.audit import AuditLog, audit_path

    settings = settings_with(audit_db=db)
    path = audit_path(settings)
    try:
        entries = AuditLog(path).entries(limit=limit, action=action)
    except sqlite3.Error as error:
        raise click.ClickException(f"cannot read the audit log {path}: {error}") from None
    if as_json:
        click.echo(json.dumps([entry.to_dict() for entry in entries], ensure_ascii=False, indent=2))
        return
    if not entries:
        click.echo(f"no admin actions recorded yet in {path}")
        return
    click.echo(f"{'id':>5}  {'time (UTC)':23}  {'client':24}  {'action':14}  {'doc':8}  "
               f"{'status':6}  {'result':14}  detail")
    for entry in entries:
        click.echo(
            f"{entry.id:>5}  {entry.time[:23]:23}  {_cell(entry.client, 24):24}  "
            f"{_cell(entry.action, 14):14}  {_cell(entry.doc_id, 8):8}  {_cell(entry.status, 6):6}  "
            f"{_cell(entry.result, 14):14}  {_cell(entry.detail, 60)}"
        )
