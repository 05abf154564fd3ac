"""Import a CTranslate2 (faster-whisper style) Whisper model into Hugging Face transformers.

English-only (tiny.en ... medium.en) and multilingual models (language and task tokens, ``lang_to_id`` /
``task_to_id`` in the generation config: ``generate(features, language="de", task="translate")``) are
both imported; the special tokens' ids follow from the vocabulary size (models/whisper_vocab.py).

CTranslate2 stores a converted model as a folder with ``model.bin`` (all weights in one
binary file), ``config.json`` (decoding hints such as suppressed tokens), ``tokenizer.json``
and ``vocabulary.txt``. We read ``model.bin`` ourselves so ``ctranslate2`` is not a dependency.

``model.bin`` layout (little endian, binary versions 5 and 6 share it)::

    u32 version | str spec_name | u32 revision | u32 n_variables
    n_variables x (str name | u8 ndim | ndim x u32 dim | u8 dtype_id | u32 nbytes | nbytes raw)
    u32 n_aliases | n_aliases x (str alias | str target)

where ``str`` is ``u16 length`` (including a trailing NUL) + UTF-8 bytes + NUL, and dtype ids
are 0 float32, 1 int8, 2 int16, 3 int32, 4 float16, 5 bfloat16. Variables come sorted by name.

Usage::

    from sparseft.models.whisper_ct2 import import_whisper_ct2

    model, processor = import_whisper_ct2("/path/to/ct2/model")
    feats = processor(audio_16k, sampling_rate=16000, return_tensors="pt").input_features
    text = processor.batch_decode(model.generate(feats), skip_special_tokens=True)[0]
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import torch
from transformers import (
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.tokenization_utils_base import AddedToken

from sparseft.errors import ModelError
from sparseft.models.whisper_vocab import (
    WhisperVocab,
    check_tokenizer,
    whisper_generation_config,
    whisper_vocab,
)

SUPPORTED_BINARY_VERSIONS = (5, 6)
# Order fixed by CTranslate2's DataType enum (include/ctranslate2/types.h).
_DTYPE_BY_ID: dict[int, str] = {
    0: "float32",
    1: "int8",
    2: "int16",
    3: "int32",
    4: "float16",
    5: "bfloat16",
}
_MAX_NDIM = 8

_CT2_GELU = 3  # ActivationType::GELU in CTranslate2


class _Reader:
    """Bounds-checked cursor over the bytes of model.bin; turns short reads into ModelError."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.offset = 0

    def fail(self, what: str) -> ModelError:
        return ModelError(
            f"{self.path} is truncated or corrupt: {what} at byte offset {self.offset} "
            f"(file size {len(self.data)} bytes); expected a CTranslate2 model.bin, "
            "re-install or re-convert the model"
        )

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.offset + n > len(self.data):
            left = len(self.data) - self.offset
            raise self.fail(f"expected {n} bytes for {what} but only {left} remain")
        chunk = self.data[self.offset : self.offset + n]
        self.offset += n
        return chunk

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        size = self.unpack("H", f"length of {what}")
        raw = self.take(size, what)
        # The stored length counts a trailing NUL; anything else means we lost sync.
        if size == 0 or raw[-1] != 0:
            raise self.fail(f"{what} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what} is not valid UTF-8") from exc


def _decode_array(raw: bytes, dtype_name: str, shape: tuple[int, ...]) -> np.ndarray:
    """Turn raw little-endian bytes into a writable numpy array of the stored dtype."""
    if dtype_name == "bfloat16":
        # numpy has no bfloat16: widen the 16 bits into the top half of a float32.
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype_name).newbyteorder("<")).reshape(shape).copy()


def _read_variable(reader: _Reader) -> tuple[str, np.ndarray]:
    name = reader.string("variable name")
    ndim = reader.unpack("B", f"rank of {name!r}")
    if ndim > _MAX_NDIM:
        raise reader.fail(f"variable {name!r} claims rank {ndim} (at most {_MAX_NDIM} expected)")
    shape = tuple(reader.unpack("I", f"shape of {name!r}") for _ in range(ndim))
    type_id = reader.unpack("B", f"dtype of {name!r}")
    if type_id not in _DTYPE_BY_ID:
        raise reader.fail(f"variable {name!r} has unknown dtype id {type_id} (expected 0-5)")
    dtype_name = _DTYPE_BY_ID[type_id]
    nbytes = reader.unpack("I", f"byte size of {name!r}")
    itemsize = 2 if dtype_name == "bfloat16" else np.dtype(dtype_name).itemsize
    expected = int(np.prod(shape, dtype=np.int64)) * itemsize
    if nbytes != expected:
        raise reader.fail(
            f"variable {name!r} {shape} {dtype_name} stores {nbytes} bytes, expected {expected}"
        )
    return name, _decode_array(reader.take(nbytes, f"data of {name!r}"), dtype_name, shape)


def _model_bin_path(path: str | Path) -> Path:
    path = Path(path)
    file = path / "model.bin" if path.is_dir() else path
    if not file.is_file():
        raise ModelError(
            f"CTranslate2 weights not found: {file} does not exist; expected a model folder "
            "containing model.bin, config.json and tokenizer.json"
        )
    return file


def read_ct2_spec(path: str | Path) -> tuple[str, int, dict[str, np.ndarray]]:
    """Read a CTranslate2 model.bin; return ``(spec_name, revision, variables)``.

    ``path`` is the model.bin file or its folder. Aliases become extra keys sharing the
    target's array. Usage: ``name, rev, variables = read_ct2_spec("model_dir")``.
    """
    file = _model_bin_path(path)
    reader = _Reader(file.read_bytes(), file)
    version = reader.unpack("I", "binary version")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ModelError(
            f"{file}: unsupported CTranslate2 binary version {version}; "
            f"expected one of {SUPPORTED_BINARY_VERSIONS} (CTranslate2 >= 3.0)"
        )
    spec_name = reader.string("spec name")
    revision = reader.unpack("I", "spec revision")
    count = reader.unpack("I", "variable count")
    variables = dict(_read_variable(reader) for _ in range(count))
    for _ in range(reader.unpack("I", "alias count")):
        alias, target = reader.string("alias name"), reader.string("alias target")
        if target not in variables:
            raise reader.fail(f"alias {alias!r} points at missing variable {target!r}")
        variables[alias] = variables[target]
    if reader.offset != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.offset} unexpected trailing bytes")
    return spec_name, revision, variables


def read_ct2_model(path: str | Path) -> dict[str, np.ndarray]:
    """Read all variables of a CTranslate2 model.bin (file or folder) as stored (no dequantization).

    Usage: ``variables = read_ct2_model("model_dir"); variables["encoder/conv1/weight"].shape``.
    Raises ModelError naming the file when it is missing, truncated or corrupt.
    """
    return read_ct2_spec(path)[2]


def dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Return float32 copies of all float/quantized weights; ``X_scale`` entries are folded into ``X``.

    CTranslate2 quantizes as ``q = rint(w * scale)`` (int8: one scale per output row,
    int16: one scalar), so ``w = q / scale``. Integer scalars (flags, head counts) pass through.
    """
    out: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        if name.endswith("_scale") and name[: -len("_scale")] in variables:
            continue
        scale = variables.get(name + "_scale")
        if scale is not None:
            scale = scale.astype(np.float32)
            scale = scale.reshape(scale.shape + (1,) * (value.ndim - scale.ndim))
            out[name] = value.astype(np.float32) / scale
        elif value.dtype.kind == "f":
            out[name] = value.astype(np.float32)
        else:
            out[name] = value
    return out


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    found = {int(m.group(1)) for k in variables if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    if found != set(range(len(found))):
        raise ModelError(f"{stack} layers are not numbered 0..n-1 in model.bin: {sorted(found)}")
    return len(found)


def _scalar(variables: dict[str, np.ndarray], name: str, default: int) -> int:
    value = variables.get(name)
    return default if value is None else int(np.asarray(value).reshape(-1)[0])


def _require(variables: dict[str, np.ndarray], name: str) -> np.ndarray:
    if name not in variables:
        raise ModelError(
            f"model.bin lacks Whisper variable {name!r}; expected a CTranslate2 WhisperSpec model"
        )
    return variables[name]


def _whisper_config(variables: dict[str, np.ndarray], hints: dict) -> WhisperConfig:
    """Derive WhisperConfig from tensor shapes; token ids from the vocabulary's layout (English or multilingual)."""
    size, d_model = _require(variables, "decoder/embeddings/weight").shape
    vocab = whisper_vocab(size)
    if _scalar(variables, "decoder/activation", _CT2_GELU) != _CT2_GELU:
        raise ModelError("model.bin decoder activation is not GELU; not an OpenAI Whisper model")
    ffn = _require(variables, "encoder/layer_0/ffn/linear_0/weight").shape[0]
    heads_default = d_model // 64  # Whisper uses 64-dim heads at every size
    return WhisperConfig(
        vocab_size=vocab.size,
        num_mel_bins=int(_require(variables, "encoder/conv1/weight").shape[1]),
        d_model=int(d_model),
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=_scalar(variables, "encoder/num_heads", heads_default),
        decoder_attention_heads=_scalar(variables, "decoder/num_heads", heads_default),
        encoder_ffn_dim=int(ffn),
        decoder_ffn_dim=int(_require(variables, "decoder/layer_0/ffn/linear_0/weight").shape[0]),
        max_source_positions=int(_require(variables, "encoder/position_encodings/encodings").shape[0]),
        max_target_positions=int(_require(variables, "decoder/position_encodings/encodings").shape[0]),
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        pad_token_id=vocab.eot,
        bos_token_id=vocab.sot,
        eos_token_id=vocab.eot,
        decoder_start_token_id=vocab.sot,
        suppress_tokens=list(hints.get("suppress_ids", [])),
        begin_suppress_tokens=list(hints.get("suppress_ids_begin", [220, vocab.eot])),
    )


def _linear(sd: dict, variables: dict, src: str, dst: str, bias: bool = True) -> None:
    sd[f"{dst}.weight"] = _require(variables, f"{src}/weight")
    if bias:
        sd[f"{dst}.bias"] = _require(variables, f"{src}/bias")


def _split_linear(sd: dict, variables: dict, src: str, dsts: list[str], no_bias: set[str]) -> None:
    """Split a fused CTranslate2 linear (rows stacked q|k|v) into separate HF projections."""
    weights = np.split(_require(variables, f"{src}/weight"), len(dsts), axis=0)
    biases = np.split(_require(variables, f"{src}/bias"), len(dsts), axis=0)
    for dst, weight, bias in zip(dsts, weights, biases, strict=True):
        sd[f"{dst}.weight"] = weight
        # Whisper's k_proj has no bias; CTranslate2 stores zeros there when fusing.
        if dst not in no_bias:
            sd[f"{dst}.bias"] = bias


def _norm(sd: dict, variables: dict, src: str, dst: str) -> None:
    sd[f"{dst}.weight"] = _require(variables, f"{src}/gamma")
    sd[f"{dst}.bias"] = _require(variables, f"{src}/beta")


def _map_layer(sd: dict, v: dict, src: str, dst: str, cross: bool) -> None:
    qkv = [f"{dst}.self_attn.{p}_proj" for p in "qkv"]
    _split_linear(sd, v, f"{src}/self_attention/linear_0", qkv, {qkv[1]})
    _linear(sd, v, f"{src}/self_attention/linear_1", f"{dst}.self_attn.out_proj")
    _norm(sd, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
    if cross:
        _linear(sd, v, f"{src}/attention/linear_0", f"{dst}.encoder_attn.q_proj")
        kv = [f"{dst}.encoder_attn.{p}_proj" for p in "kv"]
        _split_linear(sd, v, f"{src}/attention/linear_1", kv, {kv[0]})
        _linear(sd, v, f"{src}/attention/linear_2", f"{dst}.encoder_attn.out_proj")
        _norm(sd, v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
    _linear(sd, v, f"{src}/ffn/linear_0", f"{dst}.fc1")
    _linear(sd, v, f"{src}/ffn/linear_1", f"{dst}.fc2")
    _norm(sd, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")


def whisper_state_dict(variables: dict[str, np.ndarray], config: WhisperConfig) -> dict[str, torch.Tensor]:
    """Map dequantized CTranslate2 WhisperSpec variables onto WhisperForConditionalGeneration keys.

    ``proj_out.weight`` is left out: it is tied to ``model.decoder.embed_tokens.weight``
    (CTranslate2 stores it as an alias of the embeddings).
    """
    sd: dict[str, np.ndarray] = {}
    for i in (1, 2):
        _linear(sd, variables, f"encoder/conv{i}", f"model.encoder.conv{i}")
    sd["model.encoder.embed_positions.weight"] = _require(variables, "encoder/position_encodings/encodings")
    sd["model.decoder.embed_positions.weight"] = _require(variables, "decoder/position_encodings/encodings")
    sd["model.decoder.embed_tokens.weight"] = _require(variables, "decoder/embeddings/weight")
    for i in range(config.encoder_layers):
        _map_layer(sd, variables, f"encoder/layer_{i}", f"model.encoder.layers.{i}", cross=False)
    for i in range(config.decoder_layers):
        _map_layer(sd, variables, f"decoder/layer_{i}", f"model.decoder.layers.{i}", cross=True)
    _norm(sd, variables, "encoder/layer_norm", "model.encoder.layer_norm")
    _norm(sd, variables, "decoder/layer_norm", "model.decoder.layer_norm")
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in sd.items()}


def _load_weights(model: WhisperForConditionalGeneration, sd: dict[str, torch.Tensor]) -> None:
    """Load ``sd`` strictly except for the tied output projection, then re-tie it."""
    expected = model.state_dict()
    for key, tensor in sd.items():
        if key not in expected or expected[key].shape != tensor.shape:
            want = tuple(expected[key].shape) if key in expected else "no such parameter"
            raise ModelError(f"model.bin tensor for {key} has shape {tuple(tensor.shape)}; expected {want}")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if set(missing) - {"proj_out.weight"} or unexpected:
        raise ModelError(
            f"model.bin does not cover the Whisper model: missing {missing}, unexpected {unexpected}"
        )
    model.tie_weights()


def whisper_from_ct2_variables(
    variables: dict[str, np.ndarray], hints: dict | None = None
) -> WhisperForConditionalGeneration:
    """Build a float32 WhisperForConditionalGeneration (eval mode) from WhisperSpec variables.

    ``hints`` is CTranslate2's config.json (suppress_ids, suppress_ids_begin, alignment_heads).
    Usage: ``model = whisper_from_ct2_variables(read_ct2_model(model_dir))``.
    """
    hints = hints or {}
    variables = dequantize(variables)
    config = _whisper_config(variables, hints)
    model = WhisperForConditionalGeneration(config)
    _load_weights(model, whisper_state_dict(variables, config))
    model.generation_config = whisper_generation_config(
        WhisperVocab(config.vocab_size), config.max_target_positions, hints
    )
    return model.eval()


def _read_json(file: Path, what: str) -> dict:
    if not file.is_file():
        raise ModelError(f"{what} not found: {file} does not exist; expected it next to model.bin")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{file} is not valid JSON ({exc}); expected the CTranslate2 {what}") from exc


def build_tokenizer(model_dir: Path) -> WhisperTokenizer:
    """Build a Whisper tokenizer from CTranslate2's tokenizer.json (+ timestamp tokens from vocabulary.txt)."""
    spec = _read_json(model_dir / "tokenizer.json", "tokenizer file")
    try:
        vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
        specials = sorted(spec["added_tokens"], key=lambda t: t["id"])
    except (KeyError, TypeError) as exc:
        raise ModelError(
            f"{model_dir / 'tokenizer.json'} is not a BPE tokenizer.json ({exc!r} missing)"
        ) from exc
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in merges]
    tok = WhisperTokenizer(vocab=vocab, merges=merges, add_prefix_space=False)
    tok.add_tokens(
        [AddedToken(t["content"], special=True, normalized=False) for t in specials], special_tokens=True
    )
    _add_timestamp_tokens(tok, model_dir / "vocabulary.txt")
    # The prefix template (<|startoftranscript|><|notimestamps|>) was resolved in __init__,
    # before the special tokens existed; rebuild it now that they have their ids.
    tok.set_prefix_tokens()
    for t in specials:
        if tok.convert_tokens_to_ids(t["content"]) != t["id"]:
            raise ModelError(f"tokenizer.json special token {t['content']!r} does not land on id {t['id']}")
    return tok


def _add_timestamp_tokens(tok: WhisperTokenizer, vocab_file: Path) -> None:
    """Append <|0.00|>..<|30.00|>: tokenizer.json omits them but the model's vocabulary has them.

    They are added as non-special tokens, as in the Hugging Face Whisper tokenizers, because
    WhisperTokenizer locates timestamps as the ids after the last special id.
    """
    if not vocab_file.is_file():
        return
    lines = vocab_file.read_text(encoding="utf-8").splitlines()[len(tok) :]
    stamps = [t for t in lines if re.fullmatch(r"<\|\d+\.\d\d\|>", t)]
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in stamps])


def build_processor(model_dir: str | Path, num_mel_bins: int = 80) -> WhisperProcessor:
    """WhisperProcessor = default Whisper feature extractor (16 kHz, 30 s windows) + tokenizer."""
    extractor = WhisperFeatureExtractor(feature_size=num_mel_bins)
    return WhisperProcessor(feature_extractor=extractor, tokenizer=build_tokenizer(Path(model_dir)))


def import_whisper_ct2(
    model_dir: str | Path, dtype: torch.dtype = torch.float32
) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Load a CTranslate2 Whisper model folder (English-only or multilingual) as (HF model in eval mode,
    processor).

    Weights are dequantized to float32 and then cast to ``dtype``. Usage::

        model, processor = import_whisper_ct2(model_dir)
        model.save_pretrained(out); processor.save_pretrained(out)
    """
    model_dir = Path(model_dir)
    spec_name, _, raw = read_ct2_spec(model_dir)
    if spec_name != "WhisperSpec":
        raise ModelError(f"{model_dir / 'model.bin'} holds a {spec_name!r} model; expected 'WhisperSpec'")
    hints = _read_json(model_dir / "config.json", "CTranslate2 config.json")
    model = whisper_from_ct2_variables(raw, hints).to(dtype)
    config = model.config
    processor = build_processor(model_dir, config.num_mel_bins)
    if len(processor.tokenizer) != config.vocab_size:
        raise ModelError(
            f"tokenizer has {len(processor.tokenizer)} tokens but model.bin has {config.vocab_size} embeddings"
        )
    check_tokenizer(WhisperVocab(config.vocab_size), processor.tokenizer)
    return model, processor
