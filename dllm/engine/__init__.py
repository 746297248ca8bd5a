"""The step machine: requests, their decoders, the model runner, the KV pool, the engine."""
