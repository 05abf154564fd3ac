"""wav in and out with the standard library: every PCM width, channels averaged, rates resampled
band-limited (a tone stays the same tone; a tone above the new Nyquist frequency is removed)."""

import wave

import numpy as np
import pytest

from sparseft.data.audio import load_audio, read_wav, resample, write_wav
from sparseft.errors import ConfigError


def _tone(freq: float, rate: int, seconds: float = 0.5) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate)).astype(np.float32)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_every_pcm_width_reads_back_as_float(tmp_path, width):
    x = _tone(300, 8000)
    ints = np.round(x * (2 ** (8 * width - 1) - 1)).astype(np.int64)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints)
    with wave.open(str(tmp_path / "a.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(width), w.setframerate(8000), w.writeframes(raw)
    y, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and y.dtype == np.float32
    np.testing.assert_allclose(y, x, atol=2.0 / 2 ** (8 * width - 1) + 1e-6)


def test_stereo_is_averaged_and_16_bit_round_trips(tmp_path):
    left, right = _tone(200, 16000), _tone(500, 16000)
    pcm = (np.stack([left, right], 1) * 32768).round().astype("<i2")
    with wave.open(str(tmp_path / "s.wav"), "wb") as w:
        w.setnchannels(2), w.setsampwidth(2), w.setframerate(16000), w.writeframes(pcm.tobytes())
    mono, _ = read_wav(tmp_path / "s.wav")
    np.testing.assert_allclose(mono, (left + right) / 2, atol=1e-4)
    write_wav(tmp_path / "m.wav", mono, 16000)
    np.testing.assert_allclose(read_wav(tmp_path / "m.wav")[0], mono, atol=1 / 32768)


@pytest.mark.parametrize("src,dst", [(22050, 16000), (8000, 16000), (44100, 16000)])
def test_resampling_keeps_a_tone(src, dst):
    y = resample(_tone(440, src), src, dst)
    assert len(y) == int(0.5 * dst)
    want = _tone(440, dst)
    edge = dst // 50  # the filter sees zeros beyond the ends
    assert np.abs(y[edge:-edge] - want[edge:-edge]).max() < 1e-3


def test_downsampling_removes_what_the_new_rate_cannot_hold():
    y = resample(_tone(10000, 44100), 44100, 16000)  # above 8 kHz: would alias to 6 kHz
    assert np.abs(y[400:-400]).max() < 0.01


def test_not_a_pcm_wav_is_a_clear_error(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"RIFF0000WAVEfmt garbage")
    with pytest.raises(ConfigError, match="not a PCM wav file"):
        load_audio(tmp_path / "x.wav")
    with pytest.raises(ConfigError, match="does not exist"):
        load_audio(tmp_path / "missing.wav")
