"""`policyqa add`, `policyqa remove`, `policyqa list`: manage the documents of the knowledge base.

`add` and `remove` change the corpus folder and its catalogue (see corpus.library), then
rebuild the index incrementally: only passages missing from the embedding cache are
embedded. A server already running keeps its index until `POST /api/reindex` (or a restart).
Each change, and each refused one, is appended to the audit log that the admin API and page
write too (ui.audit), with the actions they use ("upload", "replace", "remove") and
"cli:<user>@<host>" as the client.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from corpus.models import Status
from ui.cli_common import index_dir_option, settings_with

corpus_dir_option = click.option(
    "--corpus-dir", type=click.Path(path_type=Path), default=None,
    help="folder of policy documents (default: settings.corpus.corpus_dir)",
)
catalogue_option = click.option(
    "--catalogue", "catalogue_path", type=click.Path(path_type=Path), default=None,
    help="catalogue JSON of that folder (default: settings.corpus.catalogue_path)",
)
build_option = click.option(
    "--build/--no-build", default=True, help="rebuild the index afterwards (default: yes)"
)
audit_db_option = click.option(
    "--audit-db", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="audit log to append to (default: settings.service.audit_db, else data_dir/audit.sqlite3)",
)
SERVER_HINT = "A running server picks this up after POST /api/reindex (or a restart)."


class CliAudit:
    """Appends this command's actions to the audit log of `settings`. A change already made
    stays made when the log cannot be written: the command warns and carries on."""

    def __init__(self, settings) -> None:
        from ui.audit import AuditLog, cli_client

        self.log = AuditLog.for_settings(settings)
        self.client = cli_client()

    def record(self, action: str, doc_id: str | None, result: str, detail: str | None = None) -> None:
        try:
            self.log.record(action, doc_id, result, self.client, detail=detail)
        except Exception as error:  # sqlite3.Error, or a folder that cannot be written
            click.echo(f"warning: audit entry not written to {self.log.path}: {error}", err=True)


def _rebuild(settings) -> None:
    """Builds the index beside the current one and swaps it in; prints what it took."""
    from index import EmbedderError, IndexBuildError, IndexLoadError
    from index.rebuild import build_staged, publish

    try:
        staged = build_staged(settings)
        publish(staged, settings)
    except (IndexBuildError, EmbedderError, IndexLoadError) as error:
        raise click.ClickException(f"index not rebuilt (the previous one is unchanged): {error}") from None
    except OSError as error:
        raise click.ClickException(f"cannot write the index: {error}") from None
    report = staged.report
    for load_error in report.load_errors:
        click.echo(f"skipped: {load_error.message}", err=True)
    click.echo(
        f"index rebuilt: {report.documents} documents, {report.chunks} chunks; embedded "
        f"{report.embedded} new passages, {report.cached} from cache; {report.seconds:.1f} s "
        f"(version {report.version})"
    )
    click.echo(SERVER_HINT)


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--title", default=None, help="title (default: the document's first heading or line)")
@click.option("--issuer", default=None, help="issuing body, e.g. 上海市人民政府")
@click.option("--date", default=None, help="date issued, YYYY-MM-DD (default: found in the text)")
@click.option("--doc-number", default=None, help="文号, e.g. 沪府发〔2021〕2号 (default: found in the text)")
@click.option("--status", type=click.Choice([status.value for status in Status]), default=None,
              help="the document's status (default: in force)")
@click.option("--kind", default=None, help="plan, notice, measures, regulation, catalogue, ...")
@click.option("--effective-date", default=None, help="date it takes effect, YYYY-MM-DD")
@click.option("--region", default=None, help="region it applies to")
@click.option("--doc-id", default=None, help="id to give it (default: the next free number)")
@click.option("--replaces", default=None, metavar="DOC_ID", help="mark DOC_ID superseded by this document")
@click.option("--remove-replaced", is_flag=True, help="with --replaces: remove DOC_ID instead of flagging it")
@build_option
@corpus_dir_option
@catalogue_option
@index_dir_option
@audit_db_option
def add(
    files: tuple[Path, ...],
    title: str | None,
    issuer: str | None,
    date: str | None,
    doc_number: str | None,
    status: str | None,
    kind: str | None,
    effective_date: str | None,
    region: str | None,
    doc_id: str | None,
    replaces: str | None,
    remove_replaced: bool,
    build: bool,
    corpus_dir: Path | None,
    catalogue_path: Path | None,
    index_dir: Path | None,
    audit_db: Path | None,
) -> None:
    """Add policy documents (.txt, .md, .pdf, .docx) to the knowledge base.

    The original file is kept unchanged in the corpus folder. Metadata the document states
    (title, 文号, dates) is read from it; flags win. Each document-specific flag (--title,
    --doc-number, --doc-id, --replaces) needs a single FILE; the others apply to all.

    Examples:

        policyqa add 人才新政.docx --issuer 上海虹桥国际中央商务区管理委员会

        policyqa add 2024版方案.pdf --replaces 001

        policyqa add a.txt b.md --status excerpt --no-build
    """
    from corpus.library import DuplicateDocumentError, Library, LibraryError, check_metadata

    if len(files) > 1 and any(value for value in (title, doc_number, doc_id, replaces)):
        raise click.ClickException("--title, --doc-number, --doc-id and --replaces need a single FILE")
    if remove_replaced and not replaces:
        raise click.ClickException("--remove-replaced needs --replaces DOC_ID")
    settings = settings_with(
        corpus_dir=corpus_dir, catalogue_path=catalogue_path, index_dir=index_dir, audit_db=audit_db
    )
    library = Library(settings)
    audit = CliAudit(settings)
    action = "replace" if replaces else "upload"  # as the admin API and page record them
    try:
        metadata = check_metadata(
            title=title, issuer=issuer, doc_number=doc_number, date=date, kind=kind,
            status=status, effective_date=effective_date, region=region,
        )
    except LibraryError as error:
        audit.record(action, replaces, error.code, error.message)
        raise click.ClickException(error.message) from None
    started = time.perf_counter()
    changed, failed = 0, 0
    for path in files:
        if not path.is_file():
            click.echo(f"Error: {path}: 文件不存在", err=True)
            audit.record(action, replaces, "not_found", f"policyqa add {path.name}: 文件不存在")
            failed += 1
            continue
        try:
            added = library.add(path, metadata, doc_id=doc_id, replaces=replaces, remove_replaced=remove_replaced)
        except DuplicateDocumentError as error:
            click.echo(f"unchanged: {path.name}: {error.message}")
            audit.record(action, error.doc_id, error.code, error.message)
            continue
        except LibraryError as error:
            click.echo(f"Error: {error.message}", err=True)
            audit.record(action, replaces, error.code, error.message)
            failed += 1
            continue
        except Exception:
            audit.record(action, replaces, "internal_error", f"policyqa add {path.name}")
            raise
        changed += 1
        document = added.document
        detail = f"《{document.title}》 from {path.name} as {added.stored_file}"
        if added.replaced_doc_id:
            detail += f"; replaces {added.replaced_doc_id} ({added.replaced_action})"
        audit.record(action, document.doc_id, "ok", detail)
        click.echo(
            f"added {document.doc_id}: {document.title} [{document.status or '-'}"
            f"{', ' + document.date if document.date else ''}"
            f"{', ' + document.doc_number if document.doc_number else ''}] as {added.stored_file}"
        )
        if added.replaced_doc_id:
            click.echo(f"{added.replaced_action}: {added.replaced_doc_id}")
    click.echo(f"{changed} added, {failed} failed in {time.perf_counter() - started:.1f} s")
    if changed and build:
        _rebuild(settings)
    if failed:
        raise click.ClickException(f"{failed} file(s) not added (see above)")


@click.command()
@click.argument("doc_id")
@build_option
@corpus_dir_option
@catalogue_option
@index_dir_option
@audit_db_option
def remove(
    doc_id: str, build: bool, corpus_dir: Path | None, catalogue_path: Path | None,
    index_dir: Path | None, audit_db: Path | None,
) -> None:
    """Remove a document from the knowledge base. Its original moves to the corpus
    folder's .removed/ (with its catalogue entry), so it can be restored by hand.

    Examples:

        policyqa remove 005
    """
    from corpus.library import Library, LibraryError

    settings = settings_with(
        corpus_dir=corpus_dir, catalogue_path=catalogue_path, index_dir=index_dir, audit_db=audit_db
    )
    audit = CliAudit(settings)
    try:
        removed = Library(settings).remove(doc_id)
    except LibraryError as error:
        audit.record("remove", doc_id, error.code, error.message)
        raise click.ClickException(error.message) from None
    except Exception:
        audit.record("remove", doc_id, "internal_error")
        raise
    audit.record("remove", removed.doc_id, "ok", f"《{removed.title}》 kept at {removed.kept_at}")
    click.echo(f"removed {removed.doc_id}: {removed.title} (original kept at {removed.kept_at})")
    if build:
        _rebuild(settings)


@click.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
@corpus_dir_option
@catalogue_option
def list_documents(as_json: bool, corpus_dir: Path | None, catalogue_path: Path | None) -> None:
    """List the documents in the corpus folder with their status and dates.

    Examples:

        policyqa list

        policyqa list --json
    """
    from corpus.library import Library

    settings = settings_with(corpus_dir=corpus_dir, catalogue_path=catalogue_path)
    loaded = Library(settings).load()
    if as_json:
        click.echo(json.dumps(
            {"documents": [document.model_dump(mode="json", exclude={"text"}) for document in loaded.documents],
             "errors": [{"file": e.source_file, "message": e.message} for e in loaded.errors]},
            ensure_ascii=False, indent=2,
        ))
        return
    columns = ("doc_id", "status", "date", "effective_date", "doc_number", "title")
    rows = [[getattr(document, name) or "-" for name in columns] for document in loaded.documents]
    widths = [max([_width(name)] + [_width(row[i]) for row in rows]) for i, name in enumerate(columns[:-1])]
    click.echo("  ".join(_pad(name, width) for name, width in zip(columns, widths)) + "  title")
    for row in rows:
        click.echo("  ".join(_pad(value, width) for value, width in zip(row, widths)) + "  " + row[-1])
    for error in loaded.errors:
        click.echo(f"not loaded: {error.message}", err=True)
    click.echo(f"{len(rows)} documents")


def _width(text: str) -> int:
    from corpus.text import display_width

    return display_width(text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))
