"""`dllm serve`: an OpenAI-compatible HTTP server over dllm.LLMEngine (FastAPI + uvicorn, `dllm[serve]`).

protocol.py     OpenAI request bodies -> token ids + SamplingParams (plain Python)
async_engine.py the engine on its own thread; asyncio queues per HTTP request
answers.py      choices, max_tokens cut, response bodies and stream chunks
metrics.py      Prometheus text for /metrics
app.py          the FastAPI routes, errors, streaming, access log
server.py       uvicorn with the SIGTERM drain; cli.py the `dllm serve` command
"""
