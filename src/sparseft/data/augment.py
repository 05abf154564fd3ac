"""Speech augmentation for training on synthetic clips: room echo, background noise and level changes.

espeak-ng clips are clean, dry and at one level; real recordings are not. A Whisper student fine-tuned
on the clean clips drifts away from real speech (session 6: real-clip WER stopped falling after 100
steps while the synthetic loss kept falling); augmenting each read of a training clip keeps the inputs
closer to what the model meets at test time. Pure functions on float32 sample arrays at any rate:

    >>> rng = np.random.default_rng(0)
    >>> noisy = add_noise(samples, snr_db=15.0, rng=rng)          # white + brown noise at 15 dB SNR
    >>> wet = add_reverb(samples, rate=16000, rt60=0.3, rng=rng)  # a synthetic room impulse response
    >>> out = augment_speech(samples, 16000, rng)                 # random echo, noise and gain, each maybe

Only the train split is augmented (`SpeechExamples(..., augment=True)`); calibration and test clips
never are.
"""

from __future__ import annotations

import numpy as np

SNR_DB = (5.0, 30.0)  # noise level range, dB below the speech
RT60_S = (0.15, 0.6)  # room reverberation time range, seconds (small room to hall)
GAIN_DB = (-12.0, 6.0)
P_REVERB, P_NOISE = 0.5, 0.7


def power(samples: np.ndarray) -> float:
    """Mean power of a signal (mean square)."""
    return float(np.mean(np.square(samples, dtype=np.float64)))


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """`samples` plus noise (a random mix of white and brown, i.e. hiss and rumble) scaled to `snr_db` below
    the signal's mean power. A silent input is returned unchanged."""
    signal_power = power(samples)
    if signal_power == 0.0 or samples.size == 0:
        return samples.copy()
    white = rng.standard_normal(samples.size)
    brown = np.cumsum(rng.standard_normal(samples.size))
    brown -= np.linspace(brown[0], brown[-1], samples.size)  # remove the random walk's drift
    mix = rng.uniform(0.0, 1.0)
    noise = mix * white / np.sqrt(power(white)) + (1 - mix) * brown / np.sqrt(max(power(brown), 1e-12))
    noise *= np.sqrt(signal_power / 10 ** (snr_db / 10) / power(noise))
    return (samples + noise).astype(np.float32)


def room_impulse(rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct sound, then noise decaying by 60 dB over `rt60`."""
    length = max(int(rate * rt60), 2)
    t = np.arange(length) / rate
    tail = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60)  # ln(1000) = 6.9078: -60 dB at rt60
    tail[: int(0.002 * rate)] = 0.0  # a 2 ms gap before the first reflections
    impulse = 0.3 * tail / np.sqrt(np.sum(tail**2) + 1e-12)
    impulse[0] = 1.0
    return impulse


def add_reverb(samples: np.ndarray, rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """`samples` through a random room (`room_impulse`), cut to the input's length, at the input's power."""
    if samples.size == 0:
        return samples.copy()
    impulse = room_impulse(rate, rt60, rng)
    n = samples.size + impulse.size - 1
    size = 1 << (n - 1).bit_length()  # FFT convolution: the impulse is thousands of taps
    wet = np.fft.irfft(np.fft.rfft(samples, size) * np.fft.rfft(impulse, size), size)[: samples.size]
    scale = np.sqrt(power(samples) / max(power(wet), 1e-20))
    return (wet * scale).astype(np.float32)


def augment_speech(samples: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One random augmentation of a clip: reverb (probability P_REVERB, RT60 in RT60_S), noise (P_NOISE, SNR
    in SNR_DB) and a gain in GAIN_DB, clipped to [-1, 1] as a recording would be. Same length as the input."""
    out = np.asarray(samples, dtype=np.float32)
    if rng.random() < P_REVERB:
        out = add_reverb(out, rate, rng.uniform(*RT60_S), rng)
    if rng.random() < P_NOISE:
        out = add_noise(out, rng.uniform(*SNR_DB), rng)
    out = out * np.float32(10 ** (rng.uniform(*GAIN_DB) / 20))
    return np.clip(out, -1.0, 1.0).astype(np.float32)
