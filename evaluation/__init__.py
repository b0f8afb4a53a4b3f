"""Scoring answers and benchmarks: the verifier (math-verify, bounded in time), benchmark files, avg@k / pass@k,
the runner that asks an OpenAI-compatible endpoint (with retries) and its report. Imports only ``core``;
HTTP and Ray clients are imported inside the functions that need them."""
