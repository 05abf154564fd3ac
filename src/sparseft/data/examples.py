"""Seq2seq model inputs: speech clips -> Whisper features + labels, text pairs -> token ids + labels.

Both datasets give examples a model's forward takes with `labels` (the model shifts them right behind
its decoder start token itself); `seq2seq_collate` pads a list of them into a batch (labels -100 on
padding, so CE and SquareHead skip it). The same examples feed calibration (`calibration_examples`),
fine-tuning and nothing else: evaluation generates from the inputs alone.

    >>> extractor, tokenizer = speech_processing(model.config, processor)
    >>> train = SpeechExamples(load_clips("espeak", "train"), extractor, tokenizer, model.config)
    >>> batch = seq2seq_collate(pad_id(tokenizer, model.config))([train[0], train[1]])
    >>> model(**batch).loss
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from sparseft.data.pairs import TextPair
from sparseft.data.speech import SpeechClip
from sparseft.errors import ConfigError


def pad_id(tokenizer: Any, config: Any) -> int:
    """The id to pad inputs with: the tokenizer's, else the model's, else 0."""
    for value in (getattr(tokenizer, "pad_token_id", None), getattr(config, "pad_token_id", None)):
        if value is not None:
            return int(value)
    return 0


def label_ids(tokenizer: Any, text: str, config: Any, max_tokens: int | None) -> list[int]:
    """Token ids the decoder should produce for `text`, ending with EOS.

    The decoder start token is left out: the model prepends it when it shifts labels right (Whisper's
    tokenizer writes <|startoftranscript|> first). `max_tokens` truncates, keeping the EOS."""
    ids = list(tokenizer(text).input_ids)
    start = getattr(config, "decoder_start_token_id", None)
    if ids and start is not None and ids[0] == start:
        ids = ids[1:]
    eos = getattr(tokenizer, "eos_token_id", None)
    eos = eos if eos is not None else getattr(config, "eos_token_id", None)
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    limit = max_tokens or _max_target_positions(config)
    if limit is not None and len(ids) > limit:
        ids = ids[: limit - 1] + ids[-1:]
    return ids


def _max_target_positions(config: Any) -> int | None:
    value = getattr(config, "max_target_positions", None)
    return int(value) if isinstance(value, int) else None


def feature_extractor_for(config: Any):
    """A Whisper feature extractor shaped for `config` (mel bins, 2 x encoder positions frames): for a
    model folder saved without its processor (e.g. a small model built from a config)."""
    from transformers import WhisperFeatureExtractor

    return fit_window(WhisperFeatureExtractor(feature_size=config.num_mel_bins), config)


def fit_window(extractor: Any, config: Any):
    """`extractor` with its window set to the frames the encoder takes: a saved extractor recomputes its
    window from `chunk_length` (whole seconds), which a small config's window is not."""
    frames = 2 * config.max_source_positions  # the encoder's stride-2 convolution halves the frames
    if getattr(extractor, "nb_max_frames", frames) != frames:
        extractor.nb_max_frames = frames
        extractor.n_samples = frames * extractor.hop_length
    return extractor


def speech_processing(config: Any, processor: Any) -> tuple[Any, Any]:
    """(feature extractor, tokenizer) of a speech model from what was found with it: a processor, or a
    bare tokenizer (the feature extractor is then built from the config)."""
    if processor is None:
        raise ConfigError("a speech model needs its tokenizer (or processor) to turn transcripts into labels")
    extractor = getattr(processor, "feature_extractor", None)
    extractor = fit_window(extractor, config) if extractor is not None else feature_extractor_for(config)
    return extractor, getattr(processor, "tokenizer", processor)


def clip_features(extractor: Any, clips: Sequence[SpeechClip],
                  transform: Callable[[np.ndarray, int], np.ndarray] | None = None) -> torch.Tensor:
    """Log-mel input features (clips, mel bins, frames) of `clips`, each read at the extractor's rate and
    passed through `transform(samples, rate)` when given (training augmentation)."""
    rate = extractor.sampling_rate
    audio = [clip.samples(rate) for clip in clips]
    if transform is not None:
        audio = [transform(a, rate) for a in audio]
    return extractor(audio, sampling_rate=rate, return_tensors="pt").input_features


def is_multilingual_whisper(config: Any) -> bool:
    """A Whisper with language tokens (51865+ tokens; English-only models have 51864)."""
    return getattr(config, "model_type", None) == "whisper" and int(getattr(config, "vocab_size", 0)) >= 51865


def speech_label_ids(tokenizer: Any, clip: SpeechClip, config: Any, max_tokens: int | None) -> list[int]:
    """`label_ids` of a clip's transcript; for a multilingual Whisper they start with the clip's language and
    the transcribe task (<|hi|><|transcribe|><|notimestamps|>), the tokens `generate(language=...)` prompts
    with, so training and transcription agree. The tokenizer's own prefix settings are restored after."""
    # Whisper emits a space before the first word; labels read the same way.
    text = " " + clip.text.strip()
    if not (is_multilingual_whisper(config) and hasattr(tokenizer, "set_prefix_tokens")):
        return label_ids(tokenizer, text, config, max_tokens)
    saved = tokenizer.language, tokenizer.task, tokenizer.predict_timestamps
    tokenizer.set_prefix_tokens(language=clip.language, task="transcribe", predict_timestamps=False)
    try:
        return label_ids(tokenizer, text, config, max_tokens)
    finally:
        # set_prefix_tokens keeps a value where given None, so the fields are put back as they were
        tokenizer.language, tokenizer.task, tokenizer.predict_timestamps = saved


class SpeechExamples(Dataset):
    """{input_features, labels} per clip; features are computed when an example is read (each is
    mel bins x 3000 floats for Whisper: a whole training set would not stay in memory).

    `augment`: each read of a clip gets its own random echo / noise / gain (`sparseft.data.augment`),
    reproducible from `seed`, the clip's index and how often it was read before."""

    def __init__(self, clips: Sequence[SpeechClip], extractor: Any, tokenizer: Any, config: Any,
                 max_label_tokens: int | None = None, augment: bool = False, seed: int = 0):
        if not clips:
            raise ConfigError("no speech clips")
        self.clips, self.extractor = list(clips), extractor
        self.labels = [speech_label_ids(tokenizer, c, config, max_label_tokens) for c in self.clips]
        self.augment, self.seed = augment, seed
        self._reads = [0] * len(self.clips)

    def __len__(self) -> int:
        return len(self.clips)

    def _transform(self, index: int) -> Callable[[np.ndarray, int], np.ndarray] | None:
        if not self.augment:
            return None
        from sparseft.data.augment import augment_speech

        rng = np.random.default_rng((self.seed, index, self._reads[index]))
        self._reads[index] += 1
        return lambda samples, rate: augment_speech(samples, rate, rng)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        features = clip_features(self.extractor, [self.clips[index]], self._transform(index))[0]
        return {"input_features": features, "labels": torch.tensor(self.labels[index], dtype=torch.long)}


class PairExamples(Dataset):
    """{input_ids, attention_mask, labels} per text pair (source truncated to `max_tokens` too)."""

    def __init__(self, pairs: Sequence[TextPair], tokenizer: Any, config: Any, max_tokens: int | None = None):
        if not pairs:
            raise ConfigError("no text pairs")
        self.inputs = [list(tokenizer(p.source).input_ids)[:max_tokens] for p in pairs]
        self.labels = [label_ids(tokenizer, p.target, config, max_tokens) for p in pairs]

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = torch.tensor(self.inputs[index], dtype=torch.long)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "labels": torch.tensor(self.labels[index], dtype=torch.long)}


def _pad(rows: list[torch.Tensor], value: int) -> torch.Tensor:
    out = torch.full((len(rows), max(len(r) for r in rows)), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def seq2seq_collate(pad_token_id: int) -> Callable[[list[dict[str, torch.Tensor]]], dict[str, torch.Tensor]]:
    """A collator for SpeechExamples / PairExamples: features stacked, ids padded on the right."""

    def collate(examples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        batch = {"labels": _pad([e["labels"] for e in examples], -100)}
        if "input_features" in examples[0]:
            batch["input_features"] = torch.stack([e["input_features"] for e in examples])
        else:
            batch["input_ids"] = _pad([e["input_ids"] for e in examples], pad_token_id)
            batch["attention_mask"] = _pad([e["attention_mask"] for e in examples], 0)
        return batch

    return collate


def calibration_examples(dataset: Dataset, collate: Callable, nsamples: int, batch_size: int,
                         seed: int) -> list[dict[str, torch.Tensor]]:
    """`nsamples` examples drawn at random (without repeats while the dataset lasts), in batches."""
    if nsamples < 1 or batch_size < 1:
        raise ConfigError(f"nsamples and batch_size must be >= 1, got {nsamples} and {batch_size}")
    gen = torch.Generator().manual_seed(seed)
    order = torch.cat([torch.randperm(len(dataset), generator=gen) for _ in range(-(-nsamples // len(dataset)))])
    chosen = order[:nsamples].tolist()
    return [collate([dataset[i] for i in chosen[s : s + batch_size]]) for s in range(0, len(chosen), batch_size)]
