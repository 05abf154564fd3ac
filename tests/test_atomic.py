"""Outputs are complete or absent, never someone else's data destroyed; killed runs leave no litter."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sparseft.atomic import atomic_folder, check_replaceable, remove_stale_temporaries
from sparseft.cli import main
from sparseft.errors import ConfigError
from tiny_models import build_tiny_model


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_unrelated_folder_or_file_as_out_survives(tmp_path, capsys):
    build_tiny_model("llama").save_pretrained(tmp_path / "dense")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "notes.txt").write_text("keep me")
    for out in ("mine", "notes.txt"):
        assert main(["prune", str(tmp_path / "dense"), "--out", str(tmp_path / out)]) == 1
        assert "choose another --out" in capsys.readouterr().err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert main(["prune", str(tmp_path / "dense"), "--out", str(tmp_path / "mine"), "--overwrite"]) == 0
    assert (tmp_path / "mine" / "stage.json").is_file() and not (tmp_path / "mine" / "thesis.tex").exists()


def test_a_sparseft_output_or_empty_folder_is_replaced(tmp_path):
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty")
    (tmp_path / "ours").mkdir()
    (tmp_path / "ours" / "stage.json").write_text("{}")
    with atomic_folder(tmp_path / "ours") as tmp:
        (tmp / "stage.json").write_text('{"new": 1}')
    assert (tmp_path / "ours" / "stage.json").read_text() == '{"new": 1}'
    with pytest.raises(ConfigError, match="exists"):
        check_replaceable(tmp_path / "ours", overwrite=False)


def test_an_error_inside_leaves_the_old_output_and_no_temporary(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "stage.json").write_text("old")
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "out") as tmp:
        (tmp / "stage.json").write_text("half")
        raise RuntimeError("disk full")
    assert (tmp_path / "out" / "stage.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_temporaries_of_dead_processes_are_removed_and_live_ones_kept(tmp_path):
    dead, live = _dead_pid(), os.getpid()
    for pid in (dead, live):
        (tmp_path / f".out.tmp-{pid}-abc").mkdir()
    (tmp_path / f".other.tmp-{dead}-abc").mkdir()  # another output's: not ours to judge here
    removed = remove_stale_temporaries(tmp_path / "out")
    assert [p.name for p in removed] == [f".out.tmp-{dead}-abc"]
    assert (tmp_path / f".out.tmp-{live}-abc").is_dir() and (tmp_path / f".other.tmp-{dead}-abc").is_dir()


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from sparseft.atomic import atomic_folder
    with atomic_folder(Path(sys.argv[1])) as tmp:
        for i in range(200):
            (tmp / f"part{i}.bin").write_bytes(b"x" * 10000)
            time.sleep(0.01)
        (tmp / "stage.json").write_text("new")
""")


@pytest.mark.parametrize("delay", [0.3, 0.8, 1.5])
def test_kill_9_while_writing_leaves_the_old_output_whole(tmp_path, delay):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stage.json").write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out)])
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert sorted(p.name for p in out.iterdir()) == ["stage.json"] and (out / "stage.json").read_text() == "old"
    with atomic_folder(out) as tmp:  # the next write removes the killed run's temporary
        (tmp / "stage.json").write_text("next")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
