"""The one place where stages differ by model kind: what data a model reads and how it is scored.

| kind      | models           | data (named sources)               | calibration / training inputs         | eval metric |
|-----------|------------------|------------------------------------|---------------------------------------|-------------|
| `causal`  | GPT-2, Llama ... | texts (gsm, austen, fortunes)      | token windows                          | perplexity  |
| `seq2seq` | T5 ...           | text pairs (gsm-en-de, .tsv)        | source ids + target labels             | BLEU        |
| `speech`  | Whisper          | speech clips (espeak, librivox, cards, manifests) | log-mel features + transcript labels | WER |

Every stage calls these functions with the model it loaded (`task_of(model)`); nothing else in the
stages looks at the kind. When a stage's data setting is left at its default, the kind's default
sources are used (gsm for causal LMs, as before; espeak / gsm-en-de for the others).

    >>> task = task_of(model)
    >>> batches = calibration_batches(task, model, tokenizer, calib)
    >>> dataset, collate = training_data(task, model, tokenizer, sources, nsamples=256, seqlen=128, seed=0)
    >>> scores = evaluate_source(task, model, tokenizer, "librivox", max_items=None, max_new_tokens=200)
    >>> items = bench_items(task, model, tokenizer, BenchSettings(data=["librivox"]))   # what bench times
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sparseft.errors import ConfigError
from sparseft.settings import BenchSettings, Calibration


@dataclass(frozen=True)
class Task:
    """What a model kind reads (`data`: a `sparseft.data.kinds` kind), its defaults and its metric."""

    kind: str
    data: str
    metric: str
    calib: Calibration
    train: tuple[str, ...]
    test: tuple[str, ...]


TASKS: dict[str, Task] = {
    t.kind: t
    for t in [
        Task("causal", "text", "perplexity", Calibration(), ("gsm",), ("gsm", "austen")),
        Task("seq2seq", "pairs", "bleu", Calibration(source=["gsm-en-de"], nsamples=128, seqlen=256), ("gsm-en-de",),
             ("gsm-en-de",)),
        # A Whisper example is a 30 s window (3000 frames): 32 clips calibrate as many frames as 96 x 512 tokens.
        Task("speech", "speech", "wer", Calibration(source=["espeak"], nsamples=32, seqlen=128, batch_size=4),
             ("espeak",), ("librivox", "cards")),
    ]
}  # fmt: skip


def task_of(model) -> Task:
    from sparseft.models.loading import model_kind

    return TASKS[model_kind(model.config)]


def check_sources(task: Task, sources: Sequence[str], role: str, also: tuple[str, ...] = ()) -> None:
    """A ConfigError unless every source holds the data the task reads (or a kind in `also`)."""
    from sparseft.data.kinds import KIND_NAMES, source_kind

    for source in sources:
        kind = source_kind(source)
        if kind != task.data and kind not in also:
            defaults = ", ".join(task.train if role != "test" else task.test)
            raise ConfigError(f"{role} source {source!r} holds {KIND_NAMES[kind]}, but a {task.kind} model reads "
                              f"{KIND_NAMES[task.data]} (e.g. {defaults})")


def default_sources(settings, field: str, task: Task, defaults: tuple[str, ...]) -> list[str]:
    """`settings.<field>` when it was set, else the task's default sources for it."""
    return list(getattr(settings, field)) if field in settings.model_fields_set else list(defaults)


def calibration_for(calib: Calibration | None, task: Task) -> Calibration:
    """The calibration to use: the fields `calib` sets, the task's defaults for the others (for a causal LM
    these are the schema's own defaults, so nothing changes there)."""
    if calib is None:
        return task.calib
    return task.calib.model_copy(update={name: getattr(calib, name) for name in calib.model_fields_set})


# ----- calibration and training inputs ----------------------------------------------------------------
def _examples(task: Task, model, tokenizer, sources: Sequence[str], split: str, n: int | None, seqlen: int,
              seed: int, augment: bool = False):
    """(dataset, collate) of the task's examples (speech or text pairs) from `sources` for `split`;
    `augment`: random echo / noise / gain on each read of a clip (speech only)."""
    from sparseft.data.examples import (
        PairExamples,
        SpeechExamples,
        pad_id,
        seq2seq_collate,
        speech_processing,
    )

    if task.data == "speech":
        from sparseft.data.speech import load_clips

        extractor, text_tokenizer = speech_processing(model.config, tokenizer)
        clips = _mixed([load_clips(s, split, seed=seed) for s in sources])[:n]
        dataset = SpeechExamples(clips, extractor, text_tokenizer, model.config, max_label_tokens=seqlen,
                                 augment=augment, seed=seed)
    else:
        from sparseft.data.pairs import load_pairs

        text_tokenizer = tokenizer
        pairs = _mixed([load_pairs(s, split, seed=seed) for s in sources])[:n]
        dataset = PairExamples(pairs, tokenizer, model.config, max_tokens=seqlen)
    return dataset, seq2seq_collate(pad_id(text_tokenizer, model.config))


def _mixed(groups: list[list]) -> list:
    from itertools import zip_longest

    return [item for row in zip_longest(*groups) for item in row if item is not None]


def calibration_batches(task: Task, model, tokenizer, calib: Calibration) -> list[dict]:
    """Model inputs from the calibration split of `calib.source`, shaped for the model's kind."""
    from sparseft.data.kinds import source_kind

    # A text encoder-decoder may also calibrate on plain texts: each window goes to encoder and decoder.
    check_sources(task, calib.source, "calibration", also=("text",) if task.kind == "seq2seq" else ())
    if task.kind == "causal" or all(source_kind(s) == "text" for s in calib.source):
        return _text_windows(model, tokenizer, calib)
    dataset, collate = _examples(task, model, tokenizer, calib.source, "calibration", None, calib.seqlen, calib.seed)
    from sparseft.data.examples import calibration_examples

    return calibration_examples(dataset, collate, calib.nsamples, calib.batch_size, calib.seed)


def _text_windows(model, tokenizer, calib: Calibration) -> list[dict]:
    from sparseft.data.calibration import calibration_batches as windows
    from sparseft.data.sources import load_texts
    from sparseft.models.loading import check_seqlen

    check_seqlen(model.config, calib.seqlen, "a calibration window")
    texts = load_texts(calib.source, "calibration", seed=calib.seed)
    return windows(tokenizer, texts, calib.nsamples, calib.seqlen, calib.batch_size, calib.seed,
                   encoder_decoder=bool(getattr(model.config, "is_encoder_decoder", False)))


def training_data(task: Task, model, tokenizer, sources: Sequence[str], nsamples: int, seqlen: int, seed: int,
                  pack: bool = True, augment: bool = False) -> tuple[Any, Callable]:
    """(dataset, collator) of the train split of `sources` for the model's kind (`augment`: speech only)."""
    check_sources(task, sources, "training")
    if augment and task.data != "speech":
        raise ConfigError(f"audio augmentation needs a speech model; this one is a {task.kind} model")
    if task.kind != "causal":
        return _examples(task, model, tokenizer, sources, "train", nsamples, seqlen, seed, augment)
    from sparseft.data.sources import load_texts
    from sparseft.models.loading import check_seqlen
    from sparseft.train import CausalLMTexts, pad_collate

    check_seqlen(model.config, seqlen, "a training example")
    texts = load_texts(sources, "train", n=nsamples, seed=seed)
    return CausalLMTexts(tokenizer, texts, seqlen=seqlen, pack=pack), pad_collate(tokenizer.pad_token_id)


# ----- evaluation ------------------------------------------------------------------------------------
def evaluate_source(task: Task, model, tokenizer, source: str, *, max_items: int | None, max_new_tokens: int,
                    seqlen: int = 512, stride: int | None = None, progress: bool = False) -> dict[str, Any]:
    """{task.metric: score, counts..., outputs (generated texts)} on the test split of `source`."""
    check_sources(task, [source], "test")
    if task.kind == "causal":
        from sparseft.data.sources import load_texts
        from sparseft.evaluate.perplexity import perplexity_report

        texts = load_texts(source, "test", n=max_items)
        result = perplexity_report(model, tokenizer, texts, seqlen=seqlen, progress=progress, stride=stride)
        return {"perplexity": result.perplexity, "tokens": result.tokens, "texts": len(texts)}
    if task.kind == "speech":
        from sparseft.data.examples import speech_processing
        from sparseft.data.speech import load_clips
        from sparseft.evaluate.generation import speech_wer

        extractor, text_tokenizer = speech_processing(model.config, tokenizer)
        clips = load_clips(source, "test", n=max_items)
        result = speech_wer(model, extractor, text_tokenizer, clips, max_new_tokens=max_new_tokens, progress=progress)
        return {"wer": result.wer, "words": result.words, "clips": len(clips), "outputs": result.transcripts}
    from sparseft.data.pairs import load_pairs
    from sparseft.evaluate.generation import translation_bleu

    pairs = load_pairs(source, "test", n=max_items)
    result = translation_bleu(model, tokenizer, pairs, max_new_tokens=max_new_tokens, progress=progress)
    return {"bleu": result.bleu, "pairs": len(pairs), "outputs": result.translations}


def describe_score(task: Task, source: str, scores: dict[str, Any]) -> str:
    """One report line for a source's scores."""
    if task.kind == "causal":
        return (f"{source}: perplexity {scores['perplexity']:.3f} on {scores['tokens']} tokens "
                f"({scores['texts']} texts, test split)")
    if task.kind == "speech":
        return f"{source}: WER {100 * scores['wer']:.2f}% on {scores['words']} words ({scores['clips']} clips, test split)"
    return f"{source}: BLEU {scores['bleu']:.2f} on {scores['pairs']} pairs (test split)"


# ----- bench workload --------------------------------------------------------------------------------
@dataclass(frozen=True)
class BenchItem:
    """One timed `generate()` call: its inputs and options, a label, the text its output is scored against
    (None: speed only) and the number of new tokens it is forced to make (None: it stops at EOS)."""

    label: str
    inputs: dict[str, Any]
    options: dict[str, Any]
    reference: str | None = None
    new_tokens: int | None = None
    language: str = "en"


def bench_items(task: Task, model, tokenizer, settings: BenchSettings) -> list[BenchItem]:
    """What `sparseft bench` times for the model's kind: speech models transcribe each test clip of
    `settings.data` to its end (features computed here, outside the timing); other models decode
    `settings.tokens` new tokens after `settings.prompt`."""
    if task.kind == "speech":
        from sparseft.data.examples import clip_features, speech_processing
        from sparseft.data.speech import load_clips
        from sparseft.evaluate.generation import language_options, transcribe_options

        check_sources(task, settings.data, "test")
        extractor, _ = speech_processing(model.config, tokenizer)
        clips = [clip for source in settings.data for clip in load_clips(source, "test")][: settings.max_clips]
        options = transcribe_options(model)
        return [BenchItem(clip.audio.name, {"input_features": clip_features(extractor, [clip])},
                          {**options, **language_options(model, clip.language)}, clip.text, language=clip.language)
                for clip in clips]
    import torch

    # Speed does not depend on which tokens: without a tokenizer, a fixed prompt of ids stands in.
    ids = tokenizer(settings.prompt, return_tensors="pt")["input_ids"] if tokenizer else torch.arange(1, 17)[None]
    options = {"max_new_tokens": settings.tokens, "min_new_tokens": settings.tokens, "do_sample": False}
    return [BenchItem(f"prompt of {ids.shape[1]} tokens", {"input_ids": ids}, options, new_tokens=settings.tokens)]


def bench_scores(task: Task, model, tokenizer, items: Sequence[BenchItem], outputs: Sequence) -> dict[str, Any]:
    """The kind's metric of one model's bench outputs (generated ids per item): speech: corpus WER and the
    transcripts; nothing for text models (their prompt has no reference)."""
    if task.kind != "speech":
        return {}
    from sparseft.data.examples import speech_processing
    from sparseft.evaluate.generation import decode_generated
    from sparseft.evaluate.metrics import corpus_word_error_rate

    _, text_tokenizer = speech_processing(model.config, tokenizer)
    transcripts = [decode_generated(text_tokenizer, ids)[0] for ids in outputs]
    errors = corpus_word_error_rate([item.reference or "" for item in items], transcripts,
                                    languages=[item.language for item in items])
    return {"wer": errors.wer, "words": errors.words, "transcripts": transcripts}
