"""`dllm serve`: an OpenAI-compatible HTTP server over dllm.LLMEngine (FastAPI + uvicorn, `dllm[serve]`).

protocol.py     OpenAI request bodies -> token ids + SamplingParams (plain Python)
async_engine.py the engine on its own thread; asyncio queues per HTTP request
answers.py      choices, max_tokens cut, response bodies and stream chunks
metrics.py      Prometheus text for /metrics
handlers.py     per HTTP request: auth, admission, adding to the engine, SSE or JSON, errors, access log
app.py          the FastAPI app: routes and lifespan
server.py       uvicorn with the SIGTERM drain; cli.py the `dllm serve` command
"""
