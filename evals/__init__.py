"""The evaluation suite (installed as dllm.evals): task generators, scorers, exact-marginal oracles, runners."""
if __name__ != "dllm.evals":   # imported from a checkout's root under its own name: see dllm/_shadow.py
    from dllm._shadow import defer
    defer(__name__, __file__)
