"""`policyqa eval`, `policyqa bench` and `policyqa cmrc`: the evaluation commands."""

from __future__ import annotations

from pathlib import Path

import click

from corpus.settings import PROJECT_ROOT, Settings
from ui.cli_common import index_dir_option, settings_with

REPORTS_DIR = PROJECT_ROOT / "eval" / "reports"


def _echo_progress(config: str, done: int, total: int) -> None:
    if done == total or done % 25 == 0:
        click.echo(f"  {config}: {done}/{total}", err=True)


def _load_items(dataset_path: Path | None, split: str | None):
    from eval.dataset import DEFAULT_PATH, load_items

    path = Path(dataset_path) if dataset_path else DEFAULT_PATH
    if not path.is_file():
        raise click.ClickException(f"eval set not found: {path}")
    try:
        return path, load_items(path, split=split)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


def _load_index(run_settings: Settings):
    from index import EmbedderError, IndexBuildError, IndexLoadError

    from eval.runner import load_or_build_index

    try:
        return load_or_build_index(run_settings)
    except (IndexLoadError, IndexBuildError, EmbedderError) as error:
        raise click.ClickException(str(error)) from None


def _configs(text: str | None, run_settings: Settings) -> list[str]:
    from eval.runner import parse_configs

    try:
        return parse_configs(text, run_settings)
    except ValueError as error:
        raise click.ClickException(str(error)) from None


@click.command("eval")
@click.option("--split", type=click.Choice(["dev", "test", "all"]), default="test",
              show_default=True, help="which items of the eval set to run")
@click.option("--configs", default=None,
              help="comma-separated: bm25,dense,hybrid[,hybrid+rerank] (default: all available)")
@index_dir_option
@click.option("--out", type=click.Path(path_type=Path), default=REPORTS_DIR, show_default=True,
              help="directory for the JSON, Markdown and PNG reports")
@click.option("--show-failures", type=click.IntRange(min=0), default=0,
              help="print up to N failed items per configuration")
@click.option("--set", "dataset_path", type=click.Path(path_type=Path), default=None,
              help="eval set (JSONL; default eval/data/seed_qa.jsonl)")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="only the first N items (quick runs)")
@click.option("--tune-refusal", is_flag=True,
              help="run with refusal_threshold 0 and print the threshold sweep (reports only)")
def eval_command(split, configs, index_dir, out, show_failures, dataset_path, limit,
                 tune_refusal) -> None:
    """Run the eval set through the assistant, once per retrieval configuration.

    Prints the metrics table and writes <set>-<split>.json/.md/*.png under --out
    (`--limit N` adds -firstN, `--tune-refusal` adds -tune to the name).

    Examples:

        policyqa eval --split test

        policyqa eval --split dev --configs hybrid --show-failures 10

        policyqa eval --split dev --tune-refusal
    """
    from eval.metrics import refusal_sweep
    from eval.report import format_failures, format_sweep, format_table, write_reports
    from eval.runner import EvalRunner, display_path, run_name

    run_settings = settings_with(index_dir=index_dir)
    if tune_refusal:
        # every item answered as far as the threshold goes, so the sweep can replay it
        run_settings = run_settings.model_copy(update={"refusal_threshold": 0.0})
    config_names = _configs(configs, run_settings)
    path, items = _load_items(dataset_path, None if split == "all" else split)
    if limit:
        items = items[:limit]
    if not items:
        raise click.ClickException(f"no items in split {split!r} of {path}")
    index = _load_index(run_settings)
    click.echo(f"{len(items)} items from {path.name} ({split}), configs: "
               f"{', '.join(config_names)}", err=True)
    # partial and tuning runs get their own report names, so they never overwrite the
    # reports of a full run at the configured threshold
    name = run_name(path, split) + (f"-first{limit}" if limit else "") + (
        "-tune" if tune_refusal else "")
    run = EvalRunner(index, run_settings).run(
        items, config_names, name=name, split=split, dataset=display_path(path),
        progress=_echo_progress,
    )
    click.echo(format_table(run.rows))
    if show_failures:
        for config in run.configs:
            click.echo("")
            click.echo(format_failures(config, run.results[config], show_failures))
    if tune_refusal:
        click.echo("\nRefusal threshold sweep (refuse when the evidence score is below the "
                   "threshold; pick the value for settings.qa.refusal_threshold):")
        for config in run.configs:
            click.echo(format_sweep(config, refusal_sweep(run.results[config])))
    files = write_reports(run, Path(out))
    click.echo(f"\nwrote {files.markdown}, {files.json}, "
               + ", ".join(str(p) for p in files.images), err=True)


@click.command("bench")
@click.option("--configs", default="hybrid", show_default=True,
              help="comma-separated retrieval configurations to time")
@index_dir_option
@click.option("--set", "dataset_path", type=click.Path(path_type=Path), default=None,
              help="eval set whose questions are timed (default eval/data/seed_qa.jsonl)")
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=REPORTS_DIR / "bench_qa.json",
              show_default=True)
def bench(configs, index_dir, dataset_path, warmup, repeats, out) -> None:
    """Time retrieval alone and whole answers over every eval question (after a warm-up).

    Examples:

        policyqa bench

        policyqa bench --configs bm25,hybrid --repeats 3
    """
    from eval.bench_qa import bench_config, format_latency_table, write_bench
    from eval.runner import display_path

    # The query-vector cache off: each question's retrieval, answer and embedding timed
    # here embed it afresh, as a question asked for the first time does.
    run_settings = settings_with(index_dir=index_dir, query_cache_size=0)
    config_names = _configs(configs, run_settings)
    path, items = _load_items(dataset_path, None)
    questions = [(item.question, tuple(item.history)) for item in items]
    index = _load_index(run_settings)
    rows = []
    for config in config_names:
        click.echo(f"timing {config}: {len(questions)} questions x {repeats}", err=True)
        rows.append(bench_config(index, run_settings, config, questions, warmup, repeats))
    click.echo(format_latency_table(rows))
    written = write_bench(rows, run_settings, Path(out), display_path(path), warmup, repeats)
    click.echo(f"wrote {written}", err=True)


@click.command("cmrc")
@click.option("--path", "cmrc_path", type=click.Path(path_type=Path), default=None,
              help="CMRC 2018 SQuAD-format file (default: settings.eval.cmrc_path, "
                   "env POLICYQA_CMRC_PATH)")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="ask only the first N questions (quick runs)")
@click.option("--configs", default="bm25,dense,hybrid", show_default=True)
@index_dir_option
@click.option("--out", type=click.Path(path_type=Path), default=REPORTS_DIR, show_default=True)
def cmrc(cmrc_path, limit, configs, index_dir, out) -> None:
    """CMRC 2018 dev as an open-domain benchmark: all 848 paragraphs indexed as one corpus
    (into --index-dir, default var/cmrc-index), every question asked of all of them.

    Skips with a message (exit 0) when the data file is absent.

    Examples:

        policyqa cmrc --limit 200

        POLICYQA_CMRC_PATH=/data/cmrc2018_dev.json policyqa cmrc
    """
    from eval.cmrc import (
        CmrcBenchmark,
        CmrcFormatError,
        format_cmrc_table,
        load_cmrc,
        write_cmrc_reports,
    )

    run_settings = settings_with(cmrc_path=cmrc_path)
    path = Path(run_settings.eval.cmrc_path)
    if not path.is_file():
        click.echo(f"CMRC 2018 data not found at {path}: skipping (set POLICYQA_CMRC_PATH "
                   "or pass --path).")
        return
    try:
        cmrc_set = load_cmrc(path)
    except CmrcFormatError as error:
        raise click.ClickException(str(error)) from None
    config_names = _configs(configs, run_settings)
    benchmark = CmrcBenchmark(run_settings, cmrc_set, path,
                              index_dir or run_settings.index.data_dir / "cmrc-index")
    from index import EmbedderError, IndexBuildError

    try:
        index = benchmark.load_index()
    except (IndexBuildError, EmbedderError) as error:
        raise click.ClickException(str(error)) from None
    asked = min(limit or len(cmrc_set.questions), len(cmrc_set.questions))
    click.echo(f"{len(cmrc_set.paragraphs)} paragraphs indexed, asking {asked} questions, "
               f"configs: {', '.join(config_names)}", err=True)
    run = benchmark.run(config_names, limit=limit, progress=_cmrc_progress, index=index)
    click.echo(format_cmrc_table(run.rows))
    json_path, markdown_path = write_cmrc_reports(run, Path(out))
    click.echo(f"wrote {markdown_path}, {json_path}", err=True)


def _cmrc_progress(config: str, done: int, total: int) -> None:
    if done == total or done % 500 == 0:
        click.echo(f"  {config}: {done}/{total}", err=True)
