"""The peer plumbing without a peer engine: the pipe protocol with a real worker process, spec parsing,
where a peer's files come from, and the venv marker (an unfinished venv is rebuilt, a finished one kept)."""

import sys
import textwrap
from pathlib import Path

import pytest

from sparseft.errors import ConfigError
from sparseft.peers import parse_peer, peer_files, start_peers
from sparseft.peers.peer_venv import READY, peer_python, venv_dir
from sparseft.peers.worker import WORKERS, PeerError, PeerWorker
from sparseft.settings import BenchSettings

ECHO = textwrap.dedent(f"""
    import os, sys
    sys.path.insert(0, {str(WORKERS)!r})
    from protocol import serve

    def handle(request):
        cmd = request.pop("cmd")
        if cmd == "add":
            print("library chatter that must not reach the driver")
            os.write(1, b"and chatter written by C code straight to fd 1\\n")
            return {{"sum": request["a"] + request["b"], "threads": os.environ["OMP_NUM_THREADS"]}}
        if cmd == "die":
            os._exit(3)
        raise ValueError("no such command " + cmd)

    serve(handle)
""")


@pytest.fixture
def echo_worker(tmp_path):
    script = tmp_path / "echo_worker.py"
    script.write_text(ECHO)
    worker = PeerWorker("echo", Path(sys.executable), script, threads=2)
    yield worker
    worker.close()


def test_replies_errors_and_a_dead_worker(echo_worker):
    assert echo_worker("add", a=2, b=3) == {"sum": 5, "threads": "2"}
    with pytest.raises(PeerError, match="echo: nope failed: ValueError: no such command nope"):
        echo_worker("nope")
    assert echo_worker("add", a=1, b=1)["sum"] == 2  # an error reply leaves the worker usable
    with pytest.raises(PeerError, match="died during 'die'"):
        echo_worker("die")
    with pytest.raises(PeerError, match="gone|died"):
        echo_worker("add", a=1, b=1)


def test_peer_specs_are_checked():
    assert parse_peer("llama.cpp:Q4_0") == ("llama.cpp", "Q4_0")
    assert parse_peer("ct2") == ("ct2", None)
    with pytest.raises(ConfigError, match="unknown peer engine 'onnx'.*llama.cpp.*ct2"):
        parse_peer("onnx:int8")
    with pytest.raises(ValueError, match="unknown peer engine"):
        BenchSettings(peers=["vllm"])


def test_peer_files(tmp_path):
    assert peer_files("whisper-tiny.en", None, "ct2").joinpath("model.bin").is_file()  # the packaged CT2 files
    assert any(peer_files("smollm2-135m", None, "llama.cpp").glob("*.gguf"))
    with pytest.raises(ConfigError, match="--peer-model"):
        peer_files(str(tmp_path), None, "llama.cpp")
    with pytest.raises(ConfigError, match="does not exist"):
        peer_files("smollm2-135m", str(tmp_path / "missing.gguf"), "llama.cpp")


def test_a_peer_refuses_a_model_of_another_kind():
    with pytest.raises(ConfigError, match="runs speech models, not a causal model"):
        start_peers(["ct2:int8"], "causal", [], source="smollm2-135m", threads=1)


def test_venv_is_made_once_and_an_unfinished_one_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSEFT_CACHE", str(tmp_path))
    python = peer_python("empty", [])
    folder = venv_dir("empty", [])
    assert python == folder / "bin" / "python" and python.exists() and (folder / READY).is_file()
    stamp = folder / "kept"
    stamp.write_text("x")
    assert peer_python("empty", []) == python and stamp.exists()  # finished: reused as it is
    (folder / READY).unlink()  # as if the install had been killed
    assert peer_python("empty", []) == python and not stamp.exists() and (folder / READY).is_file()
    assert venv_dir("empty", ["a==1"]) != folder  # other pins, another venv
    assert venv_dir("empty", [], {"CMAKE_ARGS": "-DX=ON"}) != folder  # other build settings, another venv


def test_llama_cpp_is_built_without_amx_only_where_the_cpu_has_it():
    from sparseft.peers.engines import llama_cpp_build_env

    assert llama_cpp_build_env({"avx2", "avx512f", "avx512_vnni"}) == {}  # no AMX: llama.cpp's native build
    args = llama_cpp_build_env({"avx2", "fma", "avx512f", "avx512_bf16", "amx_tile", "amx_int8"})["CMAKE_ARGS"].split()
    assert "-DGGML_NATIVE=OFF" in args and "-DGGML_AMX_INT8=OFF" in args and "-DGGML_AMX_TILE=OFF" in args
    assert {"-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_AVX512=ON", "-DGGML_AVX512_BF16=ON"} <= set(args)
    assert "-DGGML_AVX512_VNNI=ON" not in args  # only what the CPU has: the build must run where it was made
