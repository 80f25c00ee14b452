"""`policyqa serve` (API + chat page) and `policyqa feedback` (ratings left in the chat)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from ui.cli_common import index_dir_option, settings_with


def load_or_build_assistant(settings):
    """The assistant over settings.index.index_dir, building the index first when there is none.

    :raises click.ClickException: when building or loading fails (e.g. a mismatched index).
    """
    from index import EmbedderError, IndexBuildError, IndexLoadError, build_index
    from qa import Assistant

    index_dir = Path(settings.index.index_dir)
    if not index_dir.is_dir() or not any(index_dir.iterdir()):
        click.echo(f"no index in {index_dir} yet: building it from {settings.corpus.corpus_dir} ...")
        try:
            report = build_index(settings, progress=True)
        except (IndexBuildError, EmbedderError) as error:
            raise click.ClickException(str(error)) from None
        click.echo(
            f"built: {report.documents} documents, {report.chunks} chunks in {report.seconds:.1f} s"
        )
    try:
        return Assistant.load(settings)
    except (IndexLoadError, EmbedderError) as error:
        raise click.ClickException(str(error)) from None


@click.command()
@click.option("--host", default=None, help="address to listen on (default: settings.service.host, 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port (default: settings.service.port, 8000)")
@index_dir_option
@click.option(
    "--cors-origin", "cors_origins", multiple=True,
    help="allow browser calls from this origin (repeatable; default: settings.service.cors_origins)",
)
@click.option(
    "--log-questions/--no-log-questions", default=None,
    help="include question text in the request log (default: settings.service.log_questions)",
)
@click.option(
    "--forwarded-allow-ips", default=None,
    help="comma-separated proxy addresses trusted to set X-Forwarded-For "
    "(default: settings.service.forwarded_allow_ips, 127.0.0.1,::1)",
)
def serve(
    host: str | None,
    port: int | None,
    index_dir: Path | None,
    cors_origins: tuple[str, ...],
    log_questions: bool | None,
    forwarded_allow_ips: str | None,
) -> None:
    """Serve the chat page at / and the JSON API at /api (docs at /docs).

    Loads the index once at start-up, building it first if the index directory is empty,
    and rebuilds it in the background when the corpus changed since it was built (e.g. a
    document stored just before a crash); /readyz shows that rebuild. Every
    settings.service.index_reload_interval_s seconds (POLICYQA_INDEX_RELOAD_INTERVAL_S,
    0: never) it loads a build another process published to the index directory: replicas
    sharing one directory follow its writer.

    Examples:

    \b
        policyqa serve
        policyqa serve --host 0.0.0.0 --port 8080 --index-dir /srv/policyqa/index
        curl -s localhost:8000/api/ask -H 'content-type: application/json' \\
            -d '{"question": "虹桥国际开放枢纽包括哪些区域？"}'
    """
    import uvicorn

    from ui.app import create_app
    from ui.kb import rebuild_if_corpus_changed

    settings = settings_with(
        host=host,
        port=port,
        index_dir=index_dir,
        cors_origins=list(cors_origins) or None,
        log_questions=log_questions,
        forwarded_allow_ips=forwarded_allow_ips,
    )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    assistant = load_or_build_assistant(settings)
    click.echo(
        f"index {assistant.index.version}: {len(assistant.documents)} documents; "
        f"chat at http://{settings.service.host}:{settings.service.port}/ , API docs at /docs"
    )
    app = create_app(settings, assistant=assistant, watch_index=True)
    if rebuild_if_corpus_changed(app) is not None:
        click.echo("the corpus changed since the index was built: rebuilding it in the background")
    # No `server: uvicorn` banner. X-Forwarded-For names the client only on connections from
    # settings.service.forwarded_allow_ips (the reverse proxy), which the rate limits key on.
    uvicorn.run(
        app, host=settings.service.host, port=settings.service.port, log_level="warning", server_header=False,
        proxy_headers=True, forwarded_allow_ips=settings.service.forwarded_allow_ips,
    )


def _cell(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


@click.command()
@click.option("--json", "as_json", is_flag=True, help="print the items as a JSON array")
@click.option(
    "--export", "export_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="write the thumbs-down items as eval-set JSONL candidates to FILE",
)
@click.option("--rating", type=click.Choice(["up", "down"]), default=None, help="only this rating")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="newest items to show")
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="feedback database (default: settings.service.feedback_db, env POLICYQA_FEEDBACK_DB)",
)
def feedback(
    as_json: bool, export_path: Path | None, rating: str | None, limit: int, db: Path | None
) -> None:
    """List the thumbs up/down left on answers in the chat page, newest first.

    --export writes the thumbs-down items in the eval set's JSONL format, with `answerable`,
    `answer` and `evidence` left for staff to fill in before adding them to the eval set.

    Examples:

    \b
        policyqa feedback
        policyqa feedback --rating down --json
        policyqa feedback --export eval/data/feedback_candidates.jsonl
    """
    from ui.feedback import FeedbackStore

    settings = settings_with(feedback_db=db)
    store = FeedbackStore(settings.service.feedback_db)
    if export_path is not None:
        try:
            count = store.export_candidates(export_path)
        except OSError as error:
            raise click.ClickException(f"cannot write {export_path}: {error}") from None
        click.echo(f"wrote {count} thumbs-down item(s) to {export_path}")
        return
    items = store.items(rating=rating, limit=limit)
    if as_json:
        click.echo(json.dumps([item.to_dict() for item in items], ensure_ascii=False, indent=2))
        return
    if not items:
        click.echo(f"no feedback yet in {settings.service.feedback_db}")
        return
    click.echo(f"{'id':>5}  {'time (UTC)':19}  {'rating':6}  {'answered':8}  question / answer")
    for item in items:
        answered = "yes" if item.answer.get("answered") else "no"
        click.echo(
            f"{item.id:>5}  {item.created_at[:19]:19}  {item.rating:6}  {answered:8}  "
            f"{_cell(item.question, 60)}"
        )
        click.echo(f"{'':46}→ {_cell(item.answer.get('answer', ''), 60)}")
