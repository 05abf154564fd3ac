"""Speech clips: manifests and pocketsphinx folders parse the same for every stage; the named sets keep
their splits apart (the real clips are test only; the synthetic training set never speaks a test text
nor the novel the librivox clips are read from); Whisper inputs and labels come out as the model needs."""

import json

import pytest
import torch

from seq2seq_helpers import SPEECH_TEXTS, tiny_whisper, write_clips
from sparseft.data.examples import (
    SpeechExamples,
    calibration_examples,
    pad_id,
    seq2seq_collate,
    speech_processing,
)
from sparseft.data.kinds import source_kind
from sparseft.data.speech import POCKETSPHINX_DIR, load_clips
from sparseft.errors import ConfigError
from sparseft.evaluate.normalize import normalize_english
from sparseft.models import load_tokenizer


def test_a_manifest_folder_gives_each_split_its_own_file(tmp_path):
    write_clips(tmp_path, SPEECH_TEXTS[:4], split="train")
    assert source_kind(str(tmp_path)) == "speech"  # a folder with one split's manifest is speech already
    write_clips(tmp_path, SPEECH_TEXTS[4:], split="test")
    assert [c.text for c in load_clips(str(tmp_path), "train")] == SPEECH_TEXTS[:4]
    assert [c.text for c in load_clips(str(tmp_path), "test")] == SPEECH_TEXTS[4:]
    assert [c.text for c in load_clips(str(tmp_path), "calibration")] == SPEECH_TEXTS[:4]  # the train side
    assert [c.text for c in load_clips(str(tmp_path / "train.jsonl"), "test")] == SPEECH_TEXTS[:4]  # a file: as given
    assert load_clips(str(tmp_path), "test")[0].samples().shape == (8000,)
    assert source_kind(str(tmp_path)) == "speech" and source_kind(str(tmp_path / "train.jsonl")) == "speech"


def test_pocketsphinx_style_folders_parse(tmp_path):
    write_clips(tmp_path, ["ten of clubs", "five five"], split="x")
    (tmp_path / "my.fileids").write_text("wav/x-0\nwav/x-1\n")
    (tmp_path / "my.transcription").write_text("<s> ten of clubs  </s> (x-0)\nfive five (x-1)\n")
    (tmp_path / "x.jsonl").unlink()
    clips = load_clips(str(tmp_path), "test")
    assert [c.text for c in clips] == ["ten of clubs", "five five"] and clips[1].audio.name == "x-1.wav"


def test_bad_manifests_name_the_line(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"audio": "a.wav", "text": "hi"}) + "\n{\"audio\": 1}\n")
    with pytest.raises(ConfigError, match=r"m.jsonl:2: expected a JSON object with 'audio' and 'text'"):
        load_clips(str(tmp_path / "m.jsonl"), "train")
    with pytest.raises(ConfigError, match="holds no test.jsonl"):
        load_clips(str(tmp_path / "m.jsonl").replace("m.jsonl", ""), "test")


def test_whisper_examples_have_features_of_the_models_window_and_shifted_labels(tmp_path):
    model = tiny_whisper(tmp_path / "w")
    extractor, tokenizer = speech_processing(model.config, load_tokenizer(tmp_path / "w"))
    write_clips(tmp_path / "c", SPEECH_TEXTS, split="train")
    data = SpeechExamples(load_clips(str(tmp_path / "c"), "train"), extractor, tokenizer, model.config)
    example = data[0]
    assert example["input_features"].shape == (16, 64)  # mel bins x 2 * max_source_positions
    labels = example["labels"].tolist()
    assert labels[0] != model.config.decoder_start_token_id and labels[-1] == model.config.eos_token_id
    assert tokenizer.decode(labels, skip_special_tokens=True).strip() == SPEECH_TEXTS[0]
    batches = calibration_examples(data, seq2seq_collate(pad_id(tokenizer, model.config)), 5, 2, seed=0)
    assert [b["input_features"].shape[0] for b in batches] == [2, 2, 1]
    assert (batches[0]["labels"] == -100).any() or batches[0]["labels"].shape[1] == max(len(x) for x in data.labels)
    with torch.no_grad():
        assert torch.isfinite(model(**batches[0]).loss)


@pytest.mark.packaged
def test_real_clips_are_test_only_and_read_at_16khz():
    if not POCKETSPHINX_DIR.is_dir():
        pytest.fail("install the Debian package pocketsphinx-testdata")
    librivox, cards = load_clips("librivox", "test"), load_clips("cards", "test")
    assert len(librivox) == 5 and len(cards) == 5
    assert librivox[1].text == "he was not an ill disposed young man" and cards[0].text == "ten of clubs"
    assert librivox[1].samples().shape == (47840,)  # 2.99 s at 16 kHz
    for split in ("train", "calibration"):
        with pytest.raises(ConfigError, match="test set of 5 real clips"):
            load_clips("librivox", split)


def _ngrams(text: str, n: int = 6) -> set[tuple[str, ...]]:
    words = normalize_english(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


@pytest.mark.packaged
def test_synthetic_training_texts_share_nothing_with_any_test_text():
    from sparseft.data.synth import speech_texts

    train, test = speech_texts("train", 200), speech_texts("test", 40)
    assert len(set(train)) == 200 and not set(train) & set(test)
    real = [c.text for s in ("librivox", "cards") for c in load_clips(s, "test")]
    train_grams = set().union(*map(_ngrams, train))
    assert not train_grams & set().union(*map(_ngrams, test + real))  # not even a 6-word phrase


@pytest.mark.packaged
def test_build_speech_set_writes_16khz_clips_with_manifests(tmp_path):
    from sparseft.cli import main

    assert main(["data", "speech", "--out", str(tmp_path / "s"), "--train", "3", "--test", "2", "--no-progress"]) == 0
    records = [json.loads(line) for line in (tmp_path / "s" / "train.jsonl").read_text().splitlines()]
    assert len(records) == 3 and {"voice", "speed", "pitch", "text", "audio"} <= set(records[0])
    clips = load_clips(str(tmp_path / "s"), "test")
    assert len(clips) == 2 and clips[0].samples().shape[0] > 16000  # more than a second of speech
    assert len(load_clips(str(tmp_path / "s"), "calibration")) == 3
    assert main(["data", "speech", "--out", str(tmp_path / "s"), "--train", "1", "--test", "1", "--no-progress"]) == 0


@pytest.mark.packaged
def test_flite_speaks_the_same_texts_as_espeak_in_its_own_voices(tmp_path):
    from sparseft.cli import main
    from sparseft.data.synth import ENGINES

    for engine in ("espeak", "flite"):
        assert main(["data", "speech", "--engine", engine, "--out", str(tmp_path / engine), "--train", "3", "--test", "1",
                     "--no-progress"]) == 0
    read = {e: [json.loads(x) for x in (tmp_path / e / "train.jsonl").read_text().splitlines()] for e in ENGINES}
    assert [r["text"] for r in read["flite"]] == [r["text"] for r in read["espeak"]]  # one text split for both
    assert {r["voice"] for r in read["flite"]} <= set(ENGINES["flite"].voices)
    assert all(r["engine"] == "flite" and r["pitch"] is None and 0.85 <= r["speed"] <= 1.2 for r in read["flite"])
    flite, espeak = (load_clips(str(tmp_path / e), "train")[0].samples() for e in ("flite", "espeak"))
    assert flite.shape[0] > 16000 and flite.shape != espeak.shape  # a second of speech, not espeak's audio


def test_flite_refuses_other_languages_and_unknown_voices(tmp_path):
    from sparseft.cli import main
    from sparseft.data.synth import ENGINES
    from sparseft.errors import SparseftError

    assert main(["data", "speech", "--engine", "flite", "--language", "hi", "--out", str(tmp_path / "x")]) == 1
    assert main(["data", "speech", "--engine", "festival", "--out", str(tmp_path / "y")]) == 1
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(SparseftError, match="flite has no voice 'nobody'"):
        ENGINES["flite"].speak("a short text", "nobody", 1.0, None, tmp_path / "z.wav")
