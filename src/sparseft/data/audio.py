"""Audio files in and out: PCM wav read as mono float32 at the rate a model wants, written as 16-bit PCM.

Only the standard library's `wave` (PCM, 8/16/24/32-bit, any channel count and rate) and numpy are used:
speech models need 16 kHz mono, and a windowed-sinc resampler is a few lines, so no audio library
(torchaudio, soundfile, ffmpeg) is needed at run time.

    >>> samples = load_audio("clip.wav", rate=16000)       # float32 in [-1, 1), mono, 16 kHz
    >>> write_wav("out.wav", samples, 16000)                 # atomic, 16-bit PCM
"""

from __future__ import annotations

import wave
from math import gcd
from pathlib import Path

import numpy as np

from sparseft.atomic import atomic_file
from sparseft.errors import ConfigError

#: The rate Whisper's feature extractor (and most speech models) expects.
SPEECH_RATE = 16000


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """(mono float32 samples in [-1, 1), sample rate) of a PCM wav file; channels are averaged."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            raw = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise ConfigError(f"audio file {path} does not exist") from None
    except (wave.Error, EOFError) as err:
        raise ConfigError(f"{path} is not a PCM wav file ({err}); convert it, e.g. "
                          f"`ffmpeg -i {path.name} -ac 1 -ar 16000 out.wav`") from None
    samples = _pcm_to_float(raw, width, path)
    usable = len(samples) - len(samples) % channels  # a truncated last frame is dropped
    return samples[:usable].reshape(-1, channels).mean(axis=1, dtype=np.float32), rate


def _pcm_to_float(raw: bytes, width: int, path: Path) -> np.ndarray:
    if width == 1:  # 8-bit wav is unsigned
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if width == 3:  # 24-bit little-endian: place the 3 bytes in the top of an int32
        b = np.frombuffer(raw[: len(raw) - len(raw) % 3], np.uint8).reshape(-1, 3).astype(np.int32)
        return ((b[:, 0] << 8 | b[:, 1] << 16 | b[:, 2] << 24) >> 8).astype(np.float32) / 8388608.0
    if width == 4:
        return np.frombuffer(raw, "<i4").astype(np.float32) / 2147483648.0
    raise ConfigError(f"{path}: {8 * width}-bit samples are not supported (8, 16, 24 or 32-bit PCM)")


def resample(samples: np.ndarray, src: int, dst: int, taps: int = 24, block: int = 8192) -> np.ndarray:
    """`samples` at rate `src` resampled to `dst` with a Hann-windowed sinc (band-limited to the lower
    Nyquist frequency, so downsampling does not alias); `taps` zero crossings on each side."""
    if src <= 0 or dst <= 0:
        raise ConfigError(f"sample rates must be positive, got {src} and {dst}")
    if src == dst or len(samples) == 0:
        return samples.astype(np.float32, copy=False)
    g = gcd(src, dst)
    src, dst = src // g, dst // g
    cutoff = min(1.0, dst / src) * 0.95  # a little below Nyquist: the windowed filter's roll-off
    half = int(np.ceil(taps / cutoff))
    padded = np.pad(samples.astype(np.float64), half)
    offsets = np.arange(-half + 1, half + 1)
    n_out = len(samples) * dst // src
    out = np.empty(n_out, np.float32)
    for start in range(0, n_out, block):
        j = np.arange(start, min(n_out, start + block))
        t = j * src / dst  # output sample positions, in input samples
        idx = np.floor(t).astype(np.int64)[:, None] + offsets[None, :]
        d = t[:, None] - idx
        kernel = cutoff * np.sinc(cutoff * d) * (0.5 + 0.5 * np.cos(np.pi * d / half))
        out[start : start + len(j)] = (padded[idx + half] * kernel).sum(axis=1)
    return out


def load_audio(path: str | Path, rate: int = SPEECH_RATE) -> np.ndarray:
    """Mono float32 samples of a wav file at `rate` (resampled when the file has another rate)."""
    samples, file_rate = read_wav(path)
    return resample(samples, file_rate, rate)


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """Write mono `samples` (float in [-1, 1]) as 16-bit PCM, atomically."""
    pcm = (np.clip(samples, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2")
    with atomic_file(path) as tmp:
        with wave.open(str(tmp), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(rate)
            wav.writeframes(pcm.tobytes())
    return Path(path)
