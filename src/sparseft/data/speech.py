"""Speech data: clips (an audio file and its transcript) from named sources or the user's manifests.

`load_clips(source, split)` is the speech twin of `load_texts`. Named sources (`SPEECH_SOURCES`):

| name       | what                                                        | train / calibration        | test                   |
|------------|-------------------------------------------------------------|----------------------------|------------------------|
| `espeak`   | synthetic English, Debian `espeak-ng`, 8 voices, 140-190 wpm | texts of the text sources' train splits | texts of their test splits |
| `flite`    | synthetic English, Debian `flite`, voices awb, rms, slt, kal16 | as espeak | as espeak |
| `espeak-hi`, `-de`, `-fr` | synthetic Hindi / German / French, 4 voices each | GSM problems of the train templates in that language | the originals of the test templates |
| `librivox` | 5 real clips read from *Sense and Sensibility* (pocketsphinx-testdata) | none (test only)    | all 5                  |
| `cards`    | 5 real clips of spoken playing cards (pocketsphinx-testdata) | none (test only)           | all 5                  |

The synthetic set never speaks *Sense and Sensibility* (the librivox clips' novel) nor *Persuasion*
(austen's test novel) in training: see `sparseft.data.synth`. It is generated once into the cache.

Paths: a `.jsonl` manifest (one {"audio": path, "text": transcript} per line, audio relative to the
manifest's folder), or a folder holding `SPLIT.jsonl` (the split's manifest, e.g. written by
`sparseft data speech --out DIR`; calibration falls back to train.jsonl), `manifest.jsonl`, or
pocketsphinx-style `fileids` + `transcription` files. Audio is PCM wav at any rate; it is read as 16 kHz mono.

    >>> clips = load_clips("librivox", "test")
    >>> clips[0].text, clips[0].samples().shape
    ('and mister john dashwood had then leisure ...', (113600,))
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sparseft.data.audio import SPEECH_RATE, load_audio
from sparseft.data.kinds import first_record_has
from sparseft.errors import ConfigError

POCKETSPHINX_DIR = Path("/usr/share/pocketsphinx/test/data")
_TRANSCRIPT_LINE = re.compile(r"^\s*(?:<s>)?(?P<text>.*?)(?:</s>)?\s*\((?P<id>[^()]+)\)\s*$")


@dataclass(frozen=True)
class SpeechClip:
    """One utterance: a wav file, what is said in it, and its language (ISO 639-1: which tokens a
    multilingual Whisper is prompted and trained with, and how WER is normalised)."""

    audio: Path
    text: str
    language: str = "en"

    def samples(self, rate: int = SPEECH_RATE) -> np.ndarray:
        return load_audio(self.audio, rate)


@dataclass(frozen=True)
class SpeechSource:
    """A named speech set: `clips(split, n, seed)` -> its clips of that split."""

    name: str
    description: str
    clips: Callable[[str, int | None, int], list[SpeechClip]]


def _pocketsphinx(folder: str) -> Callable[[str, int | None, int], list[SpeechClip]]:
    def clips(split: str, n: int | None, seed: int) -> list[SpeechClip]:
        if split != "test":
            raise ConfigError(f"{folder} is a test set of 5 real clips; train and calibrate on espeak "
                              "(synthetic speech) or your own manifest")
        path = POCKETSPHINX_DIR / folder
        if not path.is_dir():
            raise ConfigError(f"{path} not found: install the Debian package pocketsphinx-testdata")
        return _folder_clips(path, split)[:n]

    return clips


def _synth(language: str, engine: str = "espeak") -> Callable[[str, int | None, int], list[SpeechClip]]:
    def clips(split: str, n: int | None, seed: int) -> list[SpeechClip]:
        from sparseft.data.synth import synth_set

        return manifest_clips(synth_set(language, engine) / f"{'test' if split == 'test' else 'train'}.jsonl")[:n]

    return clips


def _espeak_sources() -> list[SpeechSource]:
    from sparseft.data.synth import LANGUAGES

    return [SpeechSource(f"espeak-{code}", f"synthetic {lang.name} speech (espeak-ng, {len(lang.voices)} voices): GSM "
                         f"problems in {lang.name}, train templates / the originals of the test templates",
                         _synth(code)) for code, lang in LANGUAGES.items() if code != "en"]


SPEECH_SOURCES: dict[str, SpeechSource] = {
    s.name: s
    for s in [
        SpeechSource("espeak", "synthetic English speech (espeak-ng, several voices and speeds), generated "
                     "once from the text sources' train / test splits", _synth("en")),
        SpeechSource("flite", "synthetic English speech (flite: 4 more natural CMU voices), the same splits as "
                     "espeak", _synth("en", "flite")),
        *_espeak_sources(),
        SpeechSource("librivox", "5 real clips read from Sense and Sensibility (pocketsphinx-testdata), test only",
                     _pocketsphinx("librivox")),
        SpeechSource("cards", "5 real clips of spoken playing cards (pocketsphinx-testdata), test only",
                     _pocketsphinx("cards")),
    ]
}  # fmt: skip


def load_clips(source: str, split: str, n: int | None = None, seed: int = 0) -> list[SpeechClip]:
    """Clips of `source` (a name or a path) for `split`; at most `n` of them."""
    from sparseft.data.sources import SPLITS

    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if source in SPEECH_SOURCES:
        clips = SPEECH_SOURCES[source].clips(split, n, seed)
    else:
        path = Path(source)
        clips = _folder_clips(path, split) if path.is_dir() else manifest_clips(path)
    if not clips:
        raise ConfigError(f"speech source {source!r} holds no clip for the {split} split")
    return clips[:n]


def is_speech_path(path: Path) -> bool:
    """True when `path` is an audio manifest or a folder of one (what `load_clips` reads)."""
    if path.is_dir():
        manifests = [path / f"{name}.jsonl" for name in ("train", "calibration", "test", "manifest")]
        return any(m.is_file() and first_record_has(m, "audio") for m in manifests) or (
            _pocketsphinx_files(path) is not None)
    return path.suffix == ".jsonl" and first_record_has(path, "audio")


def _folder_manifest(folder: Path, split: str) -> Path | None:
    # Calibration reads the train side when it has no file of its own (as the named sources do).
    names = [f"{split}.jsonl", *(["train.jsonl"] if split == "calibration" else []), "manifest.jsonl"]
    for name in names:
        if (folder / name).is_file():
            return folder / name
    return None


def _pocketsphinx_files(folder: Path) -> tuple[Path, Path] | None:
    ids = sorted(p for p in folder.iterdir() if p.name == "fileids" or p.name.endswith(".fileids"))
    texts = sorted(p for p in folder.iterdir() if p.name == "transcription" or p.name.endswith(".transcription"))
    return (ids[0], texts[0]) if ids and texts else None


def _folder_clips(folder: Path, split: str) -> list[SpeechClip]:
    manifest = _folder_manifest(folder, split)
    if manifest is not None:
        return manifest_clips(manifest)
    pair = _pocketsphinx_files(folder)
    if pair is None:
        raise ConfigError(f"folder {folder} holds no {split}.jsonl, manifest.jsonl, or fileids + transcription files")
    return pocketsphinx_clips(folder, *pair)


def manifest_clips(path: Path) -> list[SpeechClip]:
    """Clips of a jsonl manifest: {"audio": path relative to the manifest's folder, "text": ...} per line."""
    if not path.is_file():
        raise ConfigError(f"speech manifest {path} does not exist")
    clips = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            clips.append(SpeechClip(path.parent / str(record["audio"]), str(record["text"]),
                                    str(record.get("language", "en"))))
        except (ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}:{number}: expected a JSON object with 'audio' and 'text' ({err})") from None
    return clips


def pocketsphinx_clips(folder: Path, fileids: Path, transcription: Path) -> list[SpeechClip]:
    """Clips of a pocketsphinx test folder: `fileids` names the wavs, `transcription` holds
    '<s> words </s> (id)' lines."""
    texts = {}
    for number, line in enumerate(transcription.read_text(encoding="utf-8").splitlines(), 1):
        match = _TRANSCRIPT_LINE.match(line)
        if not line.strip():
            continue
        if match is None:
            raise ConfigError(f"{transcription}:{number}: expected '<s> words </s> (id)'")
        texts[match["id"].strip()] = " ".join(match["text"].split())
    clips = []
    for name in fileids.read_text(encoding="utf-8").split():
        key = Path(name).name
        if key not in texts:
            raise ConfigError(f"{transcription} has no transcript for {name}")
        clips.append(SpeechClip(folder / f"{name}.wav", texts[key]))
    return clips
