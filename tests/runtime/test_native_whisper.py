"""The native Whisper decoder (runtime/native_whisper.py, csrc/native_step.c) against HF's Whisper generate."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from seq2seq_helpers import tiny_whisper
from sparseft.errors import ConfigError
from sparseft.runtime import SparseLinear, forced_dense_batches, sparsify_model
from sparseft.runtime.fast_decode import prepare_for_decode
from sparseft.runtime.native_whisper import NativeWhisperDecoder, start_tokens, unsupported_reason
from tiny_models import build_tiny_model

NEW = 8


def _model(tmp_path: Path, values: str | None, fuse: bool = False) -> nn.Module:
    """The tiny Whisper of the test helpers, weights scaled so greedy tokens vary; pruned to 60% and on the
    sparse kernels with ``values`` (None: dense)."""
    model = tiny_whisper(tmp_path / "w", processor=False)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    if values:
        masks = {}
        for name, m in model.named_modules():
            if isinstance(m, nn.Linear) and "proj_out" not in name:
                keep = m.weight.abs() >= m.weight.abs().flatten().kthvalue(int(0.6 * m.weight.numel())).values
                m.weight.data *= keep
                masks[name] = keep
        sparsify_model(model, values, masks=masks)
        assert any(isinstance(m, SparseLinear) for m in model.modules())
    if fuse:
        prepare_for_decode(model, compile=False, fuse=True)
    return model.eval()


def _features(model: nn.Module, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, model.config.num_mel_bins, 2 * model.config.max_source_positions, generator=g)


def _hf(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(input_features=features, max_new_tokens=NEW, do_sample=False)


@pytest.mark.parametrize("values,fuse", [(None, False), ("int8", False), ("int8", True), ("bf16", True)])
def test_native_tokens_are_hf_generates(values: str | None, fuse: bool, isa: str, tmp_path: Path) -> None:
    model = _model(tmp_path, values, fuse)
    decoder = NativeWhisperDecoder(model, max_positions=16)
    for seed in (1, 2):
        features = _features(model, seed)
        want = _hf(model, features)
        assert want.shape[1] >= 3 and len(set(want[0].tolist())) >= 2  # a transcript that says something
        assert torch.equal(decoder.generate(features, NEW), want)


def test_native_logits_are_hfs_decoder_logits(tmp_path: Path) -> None:
    """Every step's logits against HF's forward of the whole sequence (teacher forcing), all on the sparse
    kernels: the C blocks compute what HF's WhisperDecoderLayer does, position by position."""
    model = _model(tmp_path, "int8")
    features = _features(model)
    with forced_dense_batches("off"), torch.no_grad():
        decoder = NativeWhisperDecoder(model, max_positions=16)
        start = start_tokens(model)
        sequence = start + decoder.generate(features, NEW)[0].tolist()
        ref = model(input_features=features, decoder_input_ids=torch.tensor([sequence])).logits[0]
        decoder.encode(features)
        decoder.prefill(start)
        got = [decoder.logits.clone()]
        for pos in range(len(start), len(sequence)):
            decoder.step(sequence[pos], pos)
            got.append(decoder.logits.clone())
    want = ref[len(start) - 1 :]
    assert want.std() > 0.1
    torch.testing.assert_close(torch.stack(got), want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_suppressed_tokens_are_never_generated(tmp_path: Path) -> None:
    model = _model(tmp_path, "int8")
    features = _features(model)
    free = _hf(model, features)[0].tolist()
    model.generation_config.begin_suppress_tokens = [free[0]]  # what it says first, and then its second token
    model.generation_config.suppress_tokens = [free[1]]
    want = _hf(model, features)
    assert want[0].tolist() != free and free[1] not in want[0].tolist()
    assert torch.equal(NativeWhisperDecoder(model).generate(features, NEW), want)


def test_end_of_text_stops_and_is_dropped(tmp_path: Path) -> None:
    model = _model(tmp_path, None)
    features = _features(model)
    decoder = NativeWhisperDecoder(model)
    free = decoder.generate(features, NEW)[0].tolist()
    model.generation_config.eos_token_id = free[2]  # the third token ends the transcript
    decoder = NativeWhisperDecoder(model)
    assert decoder.generate(features, NEW)[0].tolist() == free[:2] == _hf(model, features)[0].tolist()


def test_refusals(tmp_path: Path) -> None:
    assert "not a Whisper model" in unsupported_reason(build_tiny_model("t5"))
    model = _model(tmp_path, None)
    with pytest.raises(ConfigError, match="max_positions"):
        NativeWhisperDecoder(model, max_positions=model.config.max_target_positions + 1)
    decoder = NativeWhisperDecoder(model, max_positions=4)
    with pytest.raises(ConfigError, match="batch 1"):
        decoder.generate(_features(model).repeat(2, 1, 1), 2)
    with pytest.raises(ConfigError, match="must fit max_positions=4"):
        decoder.generate(_features(model), 4)
    model.model.decoder.layers[0].fc2 = nn.Linear(64, 64)  # fc1 gives 128
    with pytest.raises(ValueError, match=r"down \(fc2\) projection"):
        NativeWhisperDecoder(model)
    model.config.activation_function = "relu"
    with pytest.raises(ConfigError, match="exact GELU"):
        NativeWhisperDecoder(model)


@pytest.mark.packaged
def test_packaged_tiny_en_transcribes_real_clips_as_hf(tmp_path: Path) -> None:
    """Whisper tiny.en (packaged) on two real pocketsphinx clips: the real vocabulary, start tokens,
    suppression lists and 1500 encoder frames give HF's greedy tokens."""
    from sparseft.data.examples import clip_features, speech_processing
    from sparseft.data.speech import load_clips
    from sparseft.evaluate.generation import transcribe_options
    from sparseft.models import load_model, load_tokenizer

    model = load_model("whisper-tiny.en")
    extractor, _ = speech_processing(model.config, load_tokenizer("whisper-tiny.en"))
    options = transcribe_options(model)
    decoder = NativeWhisperDecoder(model)
    assert start_tokens(model) == [50257, 50362]
    for clip in load_clips("librivox", "test")[:2]:
        features = clip_features(extractor, [clip])
        with torch.no_grad():
            want = model.generate(input_features=features, **options)
        assert want.shape[1] > 5
        assert torch.equal(decoder.generate(features, options["max_new_tokens"]), want)
