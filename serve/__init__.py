"""Serving a checkpoint (top room, beside ``pipeline``): the Ray Serve LLM deployment behind an OpenAI-compatible
endpoint, its request guard and engine health, ``follow`` mode. Imports ``core`` and ``task``, never ``pipeline``;
Ray Serve and vLLM are imported inside the functions that start them."""
