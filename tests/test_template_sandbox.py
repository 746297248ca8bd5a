"""dllm/template_sandbox.py: the render deadline, and a tracer already set (a debugger, coverage) is
chained rather than suspended while a chat template renders."""
import sys

import pytest

from dllm.errors import TokenizerError
from dllm.template_sandbox import BoundedSandbox, render

SLOW = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


def test_a_template_that_runs_for_ever_is_stopped_at_the_deadline(monkeypatch):
    monkeypatch.setenv("DLLM_TEMPLATE_SECONDS", "0.2")
    with pytest.raises(TokenizerError, match="ran for more than 0.2 s"):
        render(BoundedSandbox(), BoundedSandbox().from_string(SLOW), {})


def test_a_tracer_already_set_keeps_seeing_the_render_and_is_restored(monkeypatch):
    monkeypatch.setenv("DLLM_TEMPLATE_SECONDS", "0.2")
    seen = []

    def local(frame, event, arg):
        seen.append((frame.f_code.co_filename, frame.f_code.co_name, event))
        return local

    def outer(frame, event, arg):
        seen.append((frame.f_code.co_filename, frame.f_code.co_name, event))
        return local

    env = BoundedSandbox()
    fast = env.from_string("{% for m in messages %}<{{ m }}>{% endfor %}")
    slow = env.from_string(SLOW)        # compiled before the tracer is set: it sees renders only
    old = sys.gettrace()
    sys.settrace(outer)
    try:
        text = render(env, fast, {"messages": ["a", "b"]})
        after = sys.gettrace()
        with pytest.raises(TokenizerError, match="ran for more than"):   # the deadline still holds
            render(env, slow, {})
        after_stop = sys.gettrace()
    finally:
        sys.settrace(old)
    assert text == "<a><b>"
    template = {event for file, name, event in seen if (file, name) == ("<template>", "root")}   # the render
    assert {"call", "line"} <= template            # the old tracer saw the template's frames and lines
    assert after is outer and after_stop is outer
