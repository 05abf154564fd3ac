"""Synthetic speech in other languages (Hindi, German, French): split by GSM template like the text
sources, clips tagged with their language, WER normalised for their scripts, and a multilingual Whisper
trained and prompted with the clip's language tokens."""

import json

import pytest

from sparseft.data.speech import SpeechClip, load_clips
from sparseft.evaluate.metrics import corpus_word_error_rate
from sparseft.evaluate.normalize import normalize_basic, normalize_text


def test_basic_normaliser_keeps_vowel_signs_and_reads_any_digits():
    # Devanagari: vowel signs (combining marks) stay inside their words; danda and ? go; ३ is 3.
    assert normalize_basic("उसने ३ दर्जन डोनट खरीदे। कुल?") == "उसने 3 दर्जन डोनट खरीदे कुल"
    assert normalize_basic("Über 20 Äpfel, (sagte er) „bitte“!") == "über 20 äpfel bitte"
    assert normalize_text("Mr. Smith", "en") == "mister smith" and normalize_text("Mr. Smith", "de") == "mr smith"


def test_corpus_wer_normalises_each_pair_in_its_language():
    refs, hyps = ["उसने ३ दर्जन", "Mr. Smith"], ["उसने 3 दर्जन।", "mister smith"]
    assert corpus_word_error_rate(refs, hyps, languages=["hi", "en"]).errors == 0
    assert corpus_word_error_rate(refs, hyps, languages=["hi", "de"]).errors == 1  # 'mr' vs 'mister' in German
    with pytest.raises(ValueError, match="languages"):
        corpus_word_error_rate(refs, hyps, languages=["hi"])


@pytest.mark.packaged
@pytest.mark.parametrize("language", ["hi", "de", "fr"])
def test_texts_of_train_and_test_templates_never_meet(language):
    from sparseft.data.synth import LANGUAGES, speech_texts
    from sparseft.data.texts import gsm_problems, gsm_template_split

    test = speech_texts("test", None, language=language)
    train = speech_texts("train", 100, language=language)
    originals = {p.question: gsm_template_split(p.id_orig) for p in gsm_problems(LANGUAGES[language].gsm)}
    assert len(test) >= 15 and all(originals.get(t) == "test" for t in test)  # test: held-out originals only
    assert len(set(train)) == 100 and not set(train) & set(originals)  # train: generated variants only
    # variants of test templates would share their wording: compare long word runs with the test texts
    grams = {tuple(t.split()[i : i + 8]) for t in test for i in range(len(t.split()) - 7)}
    assert not any(tuple(t.split()[i : i + 8]) in grams for t in train for i in range(len(t.split()) - 7))


@pytest.mark.packaged
def test_a_hindi_set_is_written_with_its_language(tmp_path):
    from sparseft.cli import main

    out = tmp_path / "hi"
    assert main(["data", "speech", "--language", "hi", "--out", str(out), "--train", "2", "--test", "1",
                 "--no-progress"]) == 0
    record = json.loads((out / "train.jsonl").read_text().splitlines()[0])
    assert record["language"] == "hi" and record["voice"].startswith("hi")
    clips = load_clips(str(out), "test")
    assert [c.language for c in clips] == ["hi"] and clips[0].samples().shape[0] > 16000
    assert main(["data", "speech", "--language", "xx", "--out", str(tmp_path / "xx")]) == 1


@pytest.mark.packaged
def test_multilingual_whisper_labels_and_transcripts_use_the_clip_language(tmp_path):
    import torch

    from sparseft.data.examples import speech_label_ids, speech_processing
    from sparseft.evaluate.generation import transcribe
    from sparseft.models import load_model, load_tokenizer

    model = load_model("whisper-base")
    extractor, tokenizer = speech_processing(model.config, load_tokenizer("whisper-base"))
    before = tokenizer.prefix_tokens
    ids = speech_label_ids(tokenizer, SpeechClip(tmp_path / "x.wav", "नमस्ते दुनिया", "hi"), model.config, None)
    assert tokenizer.convert_ids_to_tokens(ids[:3]) == ["<|hi|>", "<|transcribe|>", "<|notimestamps|>"]
    assert tokenizer.prefix_tokens == before  # the tokenizer's own prefix is left as it was
    english = speech_label_ids(tokenizer, SpeechClip(tmp_path / "x.wav", "hello", "en"), model.config, None)
    assert tokenizer.convert_ids_to_tokens(english[:2]) == ["<|en|>", "<|transcribe|>"]
    # a real English clip, transcribed as German when told so: the language token reaches generate()
    clip = load_clips("librivox", "test")[0]
    german = SpeechClip(clip.audio, clip.text, "de")
    with torch.no_grad():
        en, de = transcribe(model, extractor, tokenizer, [clip, german], max_new_tokens=12)
    assert "dashwood" in en.lower() and en != de
