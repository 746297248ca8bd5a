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
