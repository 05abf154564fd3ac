"""Greedy transcription does not repeat transformers' "both max_new_tokens and max_length set" warning on
every batch (Whisper's generation config carries max_length; the max_new_tokens we pass is meant to win)."""

import logging

from seq2seq_helpers import tiny_whisper, write_clips


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_transcribe_stays_quiet_about_max_length_and_still_stops_at_max_new_tokens(tmp_path):
    from sparseft.data.examples import speech_processing
    from sparseft.data.speech import load_clips
    from sparseft.evaluate.generation import transcribe
    from sparseft.models import load_tokenizer

    model = tiny_whisper(tmp_path / "w")
    model.generation_config.max_length = 40  # as the real models' configs have it (448)
    extractor, tokenizer = speech_processing(model.config, load_tokenizer(tmp_path / "w"))
    clips = load_clips(str(write_clips(tmp_path / "clips", ["one", "two"])), "train")
    records = _Records()
    logger = logging.getLogger("transformers.generation.utils")
    logger.addHandler(records)
    try:
        texts = transcribe(model, extractor, tokenizer, clips, batch_size=1, max_new_tokens=3)
    finally:
        logger.removeHandler(records)
    assert len(texts) == 2 and all(len(tokenizer(t, add_special_tokens=False).input_ids) <= 3 for t in texts)
    assert not [m for m in records.messages if "max_new_tokens" in m]
