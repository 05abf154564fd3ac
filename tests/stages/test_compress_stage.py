"""The compress stage converts the layers of a masks file, else only those at a meaningful sparsity."""

import torch

from sparseft.models import find_prunable, load_model
from sparseft.runtime import SparseLinear
from sparseft.settings import CompressSettings, PruneSettings
from sparseft.stages import StageIO, run_compress, run_prune
from tiny_models import build_tiny_model, tiny_batches


def test_without_masks_a_few_stray_zeros_do_not_make_a_layer_sparse(tmp_path):
    model = build_tiny_model("llama")
    layers = find_prunable(model)
    names = list(layers)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i, name in enumerate(names):
            w = layers[name].weight
            keep = 0.4 if i % 2 == 0 else 0.99  # every other layer: 60% zeros, else 1% (like GGUF rounding)
            w.mul_(torch.rand(w.shape, generator=g) < keep)
    model.save_pretrained(tmp_path / "m")  # no masks file: the zeros are all there is
    record = run_compress(CompressSettings(values="bf16"), StageIO(str(tmp_path / "m"), tmp_path / "c"))
    sparse = {n for n, m in load_model(tmp_path / "c").named_modules() if isinstance(m, SparseLinear)}
    assert sparse == set(names[0::2])
    assert set(record["skipped_layers"]) == set(names[1::2])
    assert all(0 < z < 0.05 for z in record["skipped_layers"].values())
    everything = run_compress(CompressSettings(values="bf16", min_sparsity=0.0), StageIO(str(tmp_path / "m"), tmp_path / "c0"))
    assert everything["layers"] == len(names) and not everything["skipped_layers"]


def _byte_whisper_processor(num_mel_bins: int):
    from tokenizers import pre_tokenizers
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    vocab = {c: i for i, c in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tokenizer = WhisperTokenizer(vocab=vocab, merges=[], add_prefix_space=False)
    return WhisperProcessor(WhisperFeatureExtractor(feature_size=num_mel_bins), tokenizer)


def _generation_settings(model) -> dict:
    return {k: v for k, v in model.generation_config.to_dict().items() if k != "transformers_version"}


def test_compressed_whisper_reloads_with_its_processor_and_generation_config(tmp_path):
    from transformers import WhisperProcessor

    from sparseft.models import load_tokenizer
    from sparseft.models.whisper_vocab import whisper_generation_config, whisper_vocab

    vocab = whisper_vocab(51865)  # multilingual: language and task tokens in the generation config
    ids = {"decoder_start_token_id": vocab.sot, "bos_token_id": vocab.sot, "eos_token_id": vocab.eot,
           "pad_token_id": vocab.eot}  # fmt: skip
    model = build_tiny_model("whisper", vocab_size=vocab.size, **ids)
    model.generation_config = whisper_generation_config(vocab, model.config.max_target_positions, {})
    processor = _byte_whisper_processor(model.config.num_mel_bins)
    model.save_pretrained(tmp_path / "dense")
    processor.save_pretrained(tmp_path / "dense")
    run_prune(PruneSettings(sparsity=0.5), StageIO(str(tmp_path / "dense"), tmp_path / "pruned"))
    run_compress(CompressSettings(values="fp32"), StageIO(str(tmp_path / "pruned"), tmp_path / "c"))

    masked, sparse = load_model(tmp_path / "pruned"), load_model(tmp_path / "c")
    assert _generation_settings(sparse) == _generation_settings(model)
    assert sparse.generation_config.lang_to_id["<|de|>"] == vocab.lang_to_id["<|de|>"]
    reloaded = load_tokenizer(tmp_path / "c")
    assert isinstance(reloaded, WhisperProcessor)
    assert reloaded.feature_extractor.feature_size == model.config.num_mel_bins
    assert reloaded.tokenizer("sparse whisper").input_ids == processor.tokenizer("sparse whisper").input_ids
    features = tiny_batches(model, n_batches=1)[0]["input_features"]
    with torch.no_grad():
        want = masked.generate(features, language="de", task="translate", max_new_tokens=4)
        got = sparse.generate(features, language="de", task="translate", max_new_tokens=4)
    assert torch.equal(got, want)


def test_compressed_t5_reloads_with_its_tokenizer_and_generation_config(tmp_path):
    from transformers import GenerationConfig

    from sparseft.models import load_tokenizer
    from tiny_models import byte_tokenizer

    model = build_tiny_model("t5", vocab_size=260, decoder_start_token_id=0, pad_token_id=0, eos_token_id=256)
    model.generation_config = GenerationConfig(decoder_start_token_id=0, pad_token_id=0, eos_token_id=256,
                                               max_new_tokens=7, num_beams=2)  # fmt: skip
    tokenizer = byte_tokenizer()
    model.save_pretrained(tmp_path / "dense")
    tokenizer.save_pretrained(tmp_path / "dense")
    run_prune(PruneSettings(sparsity=0.5), StageIO(str(tmp_path / "dense"), tmp_path / "pruned"))
    run_compress(CompressSettings(values="int8"), StageIO(str(tmp_path / "pruned"), tmp_path / "c"))
    sparse = load_model(tmp_path / "c")
    assert _generation_settings(sparse) == _generation_settings(model)
    reloaded = load_tokenizer(tmp_path / "c")
    ids = reloaded("translate this", return_tensors="pt").input_ids
    assert ids.tolist() == tokenizer("translate this", return_tensors="pt").input_ids.tolist()
    with torch.no_grad():
        out = sparse.generate(ids)  # the saved settings: 2 beams, 7 new tokens
    assert out.shape[1] <= 8


def test_dense_layers_stores_the_unpruned_block_linears_with_every_column(tmp_path):
    """A Whisper pruned in its decoder only: --dense-layers packs the encoder's Linears too (every column
    stored, density 1), the decoder keeps its masks, and the reloaded model computes what the masked one
    did (on the sparse kernels: fp32-exact values here)."""
    from sparseft.runtime import forced_dense_batches
    from sparseft.settings import OneShotSettings
    from sparseft.stages import run_oneshot

    model = build_tiny_model("whisper")
    model.save_pretrained(tmp_path / "dense")
    oneshot = OneShotSettings(method="magnitude", sparsity=0.5, targets=[r"decoder\.layers\."])
    run_oneshot(oneshot, StageIO(str(tmp_path / "dense"), tmp_path / "dec"))
    record = run_compress(CompressSettings(values="fp32", dense_layers="fp32"), StageIO(str(tmp_path / "dec"), tmp_path / "c"))
    packed = {n: m for n, m in load_model(tmp_path / "c").named_modules() if isinstance(m, SparseLinear)}
    encoder = [n for n in packed if ".encoder.layers." in n]
    decoder = [n for n in packed if ".decoder.layers." in n]
    assert record["dense_layers"] == len(encoder) == 2 * 6 and len(decoder) == 2 * 10
    assert all(packed[n].compressed().density == 1.0 for n in encoder)
    assert all(abs(packed[n].compressed().density - 0.5) < 0.02 for n in decoder)
    masked, compressed = load_model(tmp_path / "dec"), load_model(tmp_path / "c")
    batch = {k: v for k, v in tiny_batches(masked, n_batches=1, batch=1, seq=6)[0].items() if k != "labels"}
    with torch.no_grad(), forced_dense_batches("off"):
        want, got = masked(**batch).logits, compressed(**batch).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
