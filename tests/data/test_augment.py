"""Speech augmentation: each transform does what it says, checked against direct numpy computations; a
training set augments each read differently and reproducibly; only speech models accept it."""

import numpy as np
import pytest
import torch

from seq2seq_helpers import SPEECH_TEXTS, tiny_whisper, write_clips
from sparseft.data.augment import add_noise, add_reverb, augment_speech, room_impulse
from sparseft.data.examples import SpeechExamples, speech_processing
from sparseft.data.speech import load_clips
from sparseft.errors import ConfigError
from sparseft.models import load_tokenizer

RATE = 16000


def _tone(seconds: float = 0.5) -> np.ndarray:
    t = np.arange(int(RATE * seconds)) / RATE
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


@pytest.mark.parametrize("snr_db", [5.0, 20.0])
def test_noise_is_added_at_the_requested_snr(snr_db):
    clean = _tone()
    noisy = add_noise(clean, snr_db, np.random.default_rng(1))
    noise = noisy.astype(np.float64) - clean
    measured = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(noise**2))
    assert measured == pytest.approx(snr_db, abs=1e-3)
    assert noisy.shape == clean.shape and noisy.dtype == np.float32
    assert np.array_equal(add_noise(np.zeros(100, np.float32), 10.0, np.random.default_rng(0)), np.zeros(100))


def test_reverb_is_the_convolution_with_the_room_impulse_at_the_input_power():
    clean = _tone(0.2)
    wet = add_reverb(clean, RATE, 0.3, np.random.default_rng(7))
    impulse = room_impulse(RATE, 0.3, np.random.default_rng(7))  # the same draws
    direct = np.convolve(clean.astype(np.float64), impulse)[: clean.size]
    direct *= np.sqrt(np.mean(clean.astype(np.float64) ** 2) / np.mean(direct**2))
    np.testing.assert_allclose(wet, direct, atol=1e-5)
    assert not np.allclose(wet, clean, atol=1e-2)  # the room changed the signal


def test_room_impulse_decays_by_60_db_over_rt60():
    rt60 = 0.4
    impulse = room_impulse(RATE, rt60, np.random.default_rng(3))
    assert impulse.size == int(RATE * rt60) and impulse[0] == 1.0
    assert np.all(impulse[1 : int(0.002 * RATE)] == 0.0)  # the gap before the first reflections
    # The energy envelope in 10 ms windows falls on a line of slope -60 dB / rt60 (least squares over the tail).
    window, tail = int(0.01 * RATE), impulse[int(0.002 * RATE) :]
    n = tail.size // window
    energy_db = 10 * np.log10(np.mean(tail[: n * window].reshape(n, window) ** 2, axis=1))
    slope = np.polyfit((np.arange(n) + 0.5) * window / RATE, energy_db, 1)[0]
    assert slope == pytest.approx(-60 / rt60, rel=0.02)


def test_augment_keeps_length_and_range_and_is_reproducible():
    clean = _tone()
    a = augment_speech(clean, RATE, np.random.default_rng(5))
    b = augment_speech(clean, RATE, np.random.default_rng(5))
    c = augment_speech(clean, RATE, np.random.default_rng(6))
    assert a.shape == clean.shape and a.dtype == np.float32 and np.abs(a).max() <= 1.0
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_training_examples_augment_each_read_differently_and_reproducibly(tmp_path):
    model = tiny_whisper(tmp_path / "w")
    extractor, tokenizer = speech_processing(model.config, load_tokenizer(tmp_path / "w"))
    clips = load_clips(str(write_clips(tmp_path / "c", SPEECH_TEXTS[:3], split="train")), "train")

    def reads(augment: bool) -> list[torch.Tensor]:
        data = SpeechExamples(clips, extractor, tokenizer, model.config, augment=augment, seed=0)
        return [data[0]["input_features"], data[0]["input_features"], data[1]["input_features"]]

    plain, first, again = reads(False), reads(True), reads(True)
    assert torch.equal(plain[0], plain[1])  # no augmentation: every read the same
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[0], plain[0])
    assert all(torch.equal(x, y) for x, y in zip(first, again, strict=True))  # same seed, same sequence


def test_augmenting_a_text_model_is_refused(tmp_path):
    from sparseft.settings import FinetuneSettings
    from sparseft.stages import StageIO, run_finetune
    from tiny_models import build_tiny_model, byte_tokenizer

    build_tiny_model("llama", seed=0, vocab_size=260, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2).save_pretrained(tmp_path / "m")
    byte_tokenizer().save_pretrained(tmp_path / "m")
    settings = FinetuneSettings(teacher=None, data=["fortunes"], nsamples=8, seqlen=32, steps=1, batch_size=2,
                                loss={"task": 1.0, "squarehead": 0.0}, augment=True)
    with pytest.raises(ConfigError, match="audio augmentation needs a speech model"):
        run_finetune(settings, StageIO(str(tmp_path / "m"), tmp_path / "out"))
    assert not (tmp_path / "out").exists()
