"""Fuzzing what users and checkpoints supply (issue 19): config.json fields and SamplingParams values.
Every outcome is a load / a generation or a DllmError, never another exception (a bounded number of
examples, so the module runs in seconds)."""
from __future__ import annotations

import json
import math
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dllm.errors import DllmError
from dllm.sampling_params import SamplingParams, _hints
from tests.checkpoints import write_llada

# values of every JSON / Python type, edges included: 0, negatives, huge ints, NaN, inf, strings, containers
ANY = st.one_of(
    st.integers(-3, 40), st.sampled_from([0, -1, 2 ** 31, 2 ** 64, 10 ** 13, -(10 ** 9)]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.5, 1.0, 1e-9, 1e300]),
    st.booleans(), st.none(), st.text(max_size=4), st.lists(st.integers(-2, 5), max_size=3),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=2))
CONFIG_KEYS = ["d_model", "n_heads", "n_kv_heads", "n_layers", "mlp_hidden_size", "mlp_ratio", "vocab_size",
               "embedding_size", "max_sequence_length", "rope_theta", "rms_norm_eps", "mask_token_id", "eos_token_id",
               "pad_token_id", "include_qkv_bias", "weight_tying", "rope_full_precision", "input_emb_norm",
               "scale_logits", "block_type", "layer_norm_type", "activation_type", "alibi", "rope", "model_type"]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz_base")
    write_llada(path, dim=16, n_layers=1, n_heads=2, hidden=24, shards=1)
    return path


@FUZZ
@given(changes=st.dictionaries(st.sampled_from(CONFIG_KEYS), ANY, min_size=1, max_size=4),
       drop=st.lists(st.sampled_from(CONFIG_KEYS), max_size=2))
def test_config_fields_load_or_refuse(tiny, tmp_path_factory, changes, drop):
    from dllm.models import load_model

    d = tmp_path_factory.mktemp("fuzz_cfg", numbered=True) / "m"
    shutil.copytree(tiny, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    for k in drop:
        cfg.pop(k, None)
    (d / "config.json").write_text(json.dumps(cfg))
    try:
        model, args = load_model(d)
    except DllmError:
        return
    assert args.vocab_size >= 1 and args.dim % args.n_heads == 0     # what loaded is a consistent model


FIELDS = sorted(_hints())


def plausible(name: str):
    """Mostly values of the field's own type near its useful range, sometimes anything (ANY)."""
    from dllm.sampling_params import CACHES, REMASKING, SCHEDULES
    from dllm.schedulers import SCHEDULERS

    hint = str(_hints()[name])
    names = {"scheduler": list(SCHEDULERS), "early_commit_base": list(SCHEDULERS), "remasking": list(REMASKING),
             "schedule": list(SCHEDULES), "cache": list(CACHES), "grammar_mode": ["cfg", "regex"],
             "regex": ["[a-z]+", "x{2}", "("], "grammar": ['start: "a"+', "start: ("], "stop": ["a", ["b", ""]]}
    if name in names:
        own = st.sampled_from(names[name])
    elif name == "block_length":
        own = st.sampled_from([None, 1, 2, 4, 8, 3])
    elif "float" in hint:
        own = st.one_of(st.floats(0, 2), st.sampled_from([float("nan"), float("inf"), -1.0]))
    elif "int" in hint:
        own = st.one_of(st.integers(0, 16), st.sampled_from([2 ** 64, -(2 ** 70), 10 ** 9]))
    elif "bool" in hint:
        own = st.booleans()
    else:
        own = ANY
    return st.one_of(own, own, own, ANY)


PARAMS = st.lists(st.sampled_from(FIELDS), min_size=1, max_size=4, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({n: plausible(n) for n in names}))


@pytest.fixture(scope="module")
def llm(tiny):
    from dllm import LLM

    return LLM(str(tiny))


@FUZZ
@given(kw=PARAMS)
def test_sampling_params_generate_or_refuse(llm, kw):
    try:
        params = SamplingParams(**{"max_new_tokens": 8, **kw})
    except DllmError:
        return
    for name in ("temperature", "top_p", "eps", "threshold", "cfg_scale"):
        v = getattr(params, name)
        assert v is None or math.isfinite(v)
    if params.max_new_tokens > 64 or params.scheduler == "apd":
        return                     # the point here is the parameters; long or two-model runs elsewhere
    try:
        out = llm.generate({"prompt_token_ids": [1, 2, 3]}, params)[0]
    except DllmError:
        return
    assert len(out.token_ids) <= params.max_new_tokens
