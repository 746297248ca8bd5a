import pytest

from tests.checkpoints import write_dream, write_llada


@pytest.fixture(scope="session")
def llada_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llada")
    write_llada(path)
    return path


@pytest.fixture(scope="session")
def dream_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("dream")
    write_dream(path)
    return path


@pytest.fixture(scope="session")
def llada_notok_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("llada_notok")
    write_llada(path, tokenizer=False, n_kv_heads=2)
    return path


@pytest.fixture(scope="session")
def llada_newline_dir(tmp_path_factory):
    """A tiny LLaDA checkpoint with a tokenizer whose LM head favours the newline token (adablock's
    delimiter), so that blocks end early at some positions."""
    from tokenizers import Tokenizer

    path = tmp_path_factory.mktemp("llada_newline")
    write_llada(path, n_kv_heads=2)
    newline = Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id("\u010a")   # byte-level "\n"
    write_llada(path, n_kv_heads=2, head_boost={newline: 3.0})
    return path
