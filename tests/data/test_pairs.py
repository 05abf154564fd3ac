"""Text pairs: .tsv and .jsonl parse the same; gsm-en-de splits by template like gsm."""

import json

import pytest

from seq2seq_helpers import PAIRS, write_pairs
from sparseft.data.kinds import source_kind
from sparseft.data.pairs import TextPair, load_pairs
from sparseft.errors import ConfigError


def test_tsv_and_jsonl_pairs(tmp_path):
    write_pairs(tmp_path / "p.tsv", PAIRS)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"source": s, "target": t}) + "\n" for s, t in PAIRS))
    want = [TextPair(s, t) for s, t in PAIRS]
    assert load_pairs(str(tmp_path / "p.tsv"), "train") == want  # the header line is skipped
    assert load_pairs(str(tmp_path / "p.jsonl"), "test", n=2) == want[:2]
    assert source_kind(str(tmp_path / "p.tsv")) == source_kind(str(tmp_path / "p.jsonl")) == "pairs"
    assert source_kind(str(tmp_path)) == "pairs"


def test_a_folder_with_split_files_gives_each_split_its_own(tmp_path):
    write_pairs(tmp_path / "train.tsv", PAIRS[:4])
    write_pairs(tmp_path / "test.tsv", PAIRS[4:])
    assert len(load_pairs(str(tmp_path), "train")) == 4 and len(load_pairs(str(tmp_path), "test")) == 2
    assert len(load_pairs(str(tmp_path), "calibration")) == 4  # the train side


def test_bad_pair_files_name_the_line(tmp_path):
    (tmp_path / "bad.tsv").write_text("a\tb\nonly one cell\n")
    with pytest.raises(ConfigError, match=r"bad.tsv:2: expected 'source<TAB>target'"):
        load_pairs(str(tmp_path / "bad.tsv"), "train")
    (tmp_path / "bad.jsonl").write_text('{"source": "a"}\n')
    with pytest.raises(ConfigError, match=r"bad.jsonl:1: expected a JSON object with 'source' and 'target'"):
        load_pairs(str(tmp_path / "bad.jsonl"), "train")


@pytest.mark.packaged
def test_gsm_en_de_test_pairs_share_no_problem_with_training_pairs():
    from sparseft.data.texts import gsm_problems, gsm_template_split

    train, test = load_pairs("gsm-en-de", "train"), load_pairs("gsm-en-de", "test")
    assert len(train) > 250 and len(test) > 80 and not {p.source for p in train} & {p.source for p in test}
    test_questions = {p.question for p in gsm_problems("eng") if gsm_template_split(p.id_orig) == "test"}
    assert test_questions <= {p.source for p in test} and not test_questions & {p.source for p in train}
    assert not any("<<" in p.source or "<<" in p.target for p in train + test)
    assert load_pairs("gsm-en-de", "calibration", n=20, seed=1) == load_pairs("gsm-en-de", "calibration", n=20, seed=1)
