"""The topk schedules and per-slot scoring on hand-made numbers."""
import pytest
import torch

from dllm import SamplingParams
from dllm.engine.diffusion import schedule_style, steps_per_block
from dllm.engine.sampling import propose, top_k_filter, top_p_filter
from dllm.models.config import ModelArgs
from dllm.schedulers.base import commit_top
from dllm.schedulers.topk import TopK


def _plans(style, masked, steps, eps=1e-3):
    s = TopK(SamplingParams(eps=eps), style)
    s.begin_block([masked], steps)
    out = []
    step = 0
    while not s.block_done(step):
        out.append(s.plan(step)[0])
        step += 1
    return out


def test_llada_counts_give_the_remainder_to_the_earliest_steps():
    assert _plans("llada", 10, 4) == [3, 3, 2, 2]
    assert _plans("llada", 4, 6) == [1, 1, 1, 1, 0, 0]
    assert _plans("llada", 32, 32) == [1] * 32


def test_dream_counts_follow_the_linspace_timesteps():
    # t = linspace(1, 1e-3, 5); step i commits int(m_i * (1 - t_{i+1}/t_i)), the rest at the end
    t = torch.linspace(1, 1e-3, 5)
    m, want = 12, []
    for i in range(4):
        k = m if i == 3 else int(torch.tensor(float(m)) * (1 - t[i + 1] / t[i]))
        want.append(k)
        m -= k
    assert _plans("dream", 12, 4) == want == [2, 3, 3, 4]   # 12 * (1 - 0.75025) = 2.997 -> 2
    assert sum(_plans("dream", 7, 5)) == 7
    assert _plans("dream", 3, 8)[0] == 0    # early steps may commit nothing; the engine skips them


def test_steps_spread_over_blocks():
    assert steps_per_block(10, 4) == [3, 3, 2, 2]
    assert steps_per_block(8, 4) == [2, 2, 2, 2]


def test_schedule_auto():
    dream = ModelArgs("dream", 10, 8, 1, 1, 1, 8, 1e-6, 1e4, 64, 9)
    llada = ModelArgs("llada", 10, 8, 1, 1, 1, 8, 1e-6, 1e4, 64, 9)
    assert schedule_style(SamplingParams(max_new_tokens=8), dream) == "dream"
    assert schedule_style(SamplingParams(max_new_tokens=8, block_length=4), dream) == "llada"
    assert schedule_style(SamplingParams(max_new_tokens=8), llada) == "llada"
    assert schedule_style(SamplingParams(max_new_tokens=8, schedule="dream"), llada) == "dream"


def test_commit_top_takes_the_best_masked_slots_per_row():
    scores = torch.tensor([[0.9, 0.1, 0.8, 0.7], [0.2, 0.3, 0.4, 0.5]])
    masked = torch.tensor([[False, True, True, True], [True, True, True, True]])
    assert commit_top(scores, masked, [2, 2]).tolist() == [[False, False, True, True], [False, False, True, True]]
    assert commit_top(scores, masked, [1, 3]).tolist() == [[False, False, True, False], [False, True, True, True]]
    assert not commit_top(scores, masked, [0, 0]).any()


def _logits():
    # slot 0: peaked on token 2; slot 1: two-way tie-ish between 0 and 1; slot 2: flat with token 3 ahead
    return torch.tensor([[[0.0, 0.0, 5.0, 0.0, 0.0],
                          [2.0, 1.9, 0.0, 0.0, 0.0],
                          [0.1, 0.0, 0.0, 0.3, 0.0]]])


@pytest.mark.parametrize("style", ["llada", "dream"])
def test_propose_scores(style):
    lg = _logits()
    p = lg.softmax(-1)
    kw = dict(temperature=0.0, top_p=None, top_k=None, style=style, generator=None)
    tok, conf = propose(lg, remasking="low_confidence", **kw)
    assert tok.tolist() == [[2, 0, 3]]
    torch.testing.assert_close(conf, p.max(-1).values)
    _, margin = propose(lg, remasking="margin", **kw)
    top2 = p.topk(2, -1).values
    torch.testing.assert_close(margin, top2[..., 0] - top2[..., 1])
    _, ent = propose(lg, remasking="entropy", **kw)
    torch.testing.assert_close(ent, (p * torch.log(p + 1e-10)).sum(-1))
    assert ent[0, 0] > ent[0, 1] > ent[0, 2]                 # peaked > two-way > flat
    tok, conf = propose(lg, remasking="low_confidence", banned=2, **kw)
    assert tok[0, 0].item() != 2                           # banned token never proposed
    torch.testing.assert_close(conf[0, 0], p[0, 0, tok[0, 0]])   # ... but its mass stays in the normaliser


def test_filters():
    lg = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    low = torch.finfo(torch.float32).min
    assert top_k_filter(lg, 2).tolist() == [[3.0, 2.0, low, low]]
    p = lg.softmax(-1)                  # [0.644, 0.237, 0.087, 0.032]
    assert top_p_filter(lg, 0.5).tolist() == [[3.0, low, low, low]]
    assert top_p_filter(lg, 0.85).tolist() == [[3.0, 2.0, low, low]]
    assert p[0, :2].sum() > 0.85


def test_sampling_follows_the_tempered_distribution():
    lg = torch.tensor([[[1.0, 0.0, -1.0]]]).expand(1, 4000, 3).contiguous()
    want = (lg[0, 0] / 0.7).softmax(-1)
    for style in ("llada", "dream"):
        g = torch.Generator().manual_seed(0)
        tok, _ = propose(lg, remasking="low_confidence", temperature=0.7, top_p=None, top_k=None, style=style,
                         generator=g)
        freq = torch.bincount(tok.flatten(), minlength=3).float() / tok.numel()
        assert (freq - want).abs().max() < 0.03


def test_threshold_commits_the_best_and_everything_above():
    from dllm.schedulers.base import commit_best_and_above

    scores = torch.tensor([[0.95, 0.2, 0.91, 0.3], [0.1, 0.2, 0.3, 0.4], [0.99, 0.99, 0.99, 0.99]])
    masked = torch.tensor([[False, True, True, True], [True, True, True, True], [False] * 4])
    got = commit_best_and_above(scores, masked, 0.9).tolist()
    assert got[0] == [False, False, True, False]   # 0.95 is not masked
    assert got[1] == [False, False, False, True]   # nothing above: only the best
    assert got[2] == [False] * 4                   # a full row commits nothing


def test_propose_reports_draws_of_the_banned_token():
    """report_banned: hit = the draw before the ban was the banned token, from the same noise as the
    proposal (dInfer's x0 may be the mask token; dllm proposes the best other token and says so)."""
    V, banned = 6, 4
    lg = torch.tensor([0.5, 0.0, -0.5, 0.2, 0.9, -1.0]).expand(1, 3000, V).contiguous()
    kw = dict(remasking="low_confidence", top_p=None, top_k=None, generator=None, banned=banned)
    tok, _, hit = propose(lg.clone(), temperature=0.0, style="llada", report_banned=True, **kw)   # greedy
    assert hit.all() and (tok == 0).all()                      # argmax is the banned 4; the proposal is 0
    for T in (0.7, 1.5):
        g = torch.Generator().manual_seed(3)
        tok, conf, hit = propose(lg.clone(), temperature=T, style="llada", report_banned=True,
                                 **{**kw, "generator": g})
        # the same draw written out: Gumbel-max over logits / T with the generator's uniforms
        u = torch.rand(lg.shape, generator=torch.Generator().manual_seed(3)).clamp_(min=1e-20)
        noisy = lg / T - torch.log(-torch.log(u))
        assert torch.equal(hit, noisy.argmax(-1) == banned)
        noisy[..., banned] = float("-inf")
        assert torch.equal(tok, noisy.argmax(-1)) and not (tok == banned).any()
        q = (lg[0, 0] / T).softmax(-1)
        assert abs(hit.float().mean().item() - q[banned].item()) < 0.03   # P(Gumbel-max = b) = q_b
        torch.testing.assert_close(conf, lg.softmax(-1).gather(-1, tok[..., None])[..., 0])
        plain = propose(lg.clone(), temperature=T, style="llada", **{**kw, "generator": torch.Generator().manual_seed(3)})
        assert torch.equal(plain[0], tok)                      # asking for the report changes no draw
    g = torch.Generator().manual_seed(3)
    assert propose(lg.clone(), temperature=0.7, style="dream", report_banned=True, **{**kw, "generator": g})[2] is None
    assert propose(lg.clone(), temperature=0.7, style="llada", report_banned=True, **{**kw, "banned": None})[2] is None


def test_dinfer_skips_slots_whose_draw_was_the_mask_token():
    from dllm.schedulers.base import SchedulerEnv, Step
    from dllm.schedulers.dinfer import DInfer

    V, mask = 8, 7
    s = DInfer(SamplingParams(scheduler="dinfer", threshold=0.9), "llada", SchedulerEnv(None, "cpu", mask_id=mask))
    assert s.sees_banned
    logits = torch.zeros(1, 4, V)                              # greedy argmax: token 0 everywhere, never the mask
    scores = torch.tensor([[0.99, 0.95, 0.5, 0.3]])
    masked = torch.ones(1, 4, dtype=torch.bool)
    st = Step(index=0, forwards=1, logits=logits, tokens=torch.zeros(1, 4, dtype=torch.long), scores=scores,
              masked=masked)
    assert s.select(st).tolist() == [[True, True, False, False]]
    st.banned_hit = torch.tensor([[True, False, False, False]])   # slot 0's draw was the mask token
    assert s.select(st).tolist() == [[False, True, False, False]]
    st.banned_hit = torch.tensor([[False, True, True, False]])
    assert s.select(st).tolist() == [[True, False, False, False]]
    st.banned_hit = torch.tensor([[True, True, False, True]])     # only slot 2 (0.5): below the threshold, the best
    assert s.select(st).tolist() == [[False, False, True, False]]
    st.banned_hit = torch.ones(1, 4, dtype=torch.bool)          # every draw was the mask token: dInfer would loop;
    assert s.select(st).tolist() == [[True, False, False, False]]   # dllm commits the best proposal
