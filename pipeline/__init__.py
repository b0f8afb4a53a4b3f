"""The orchestrator (top room, beside ``serve``): the entry points ``run``, ``study``, ``bench`` and ``credit_check``,
the prompt stream, resources, the reaper and hang monitor, and the reports. Imports every room below it; the entry
points import Ray, vLLM, DeepSpeed and torch inside the functions that need them, so ``--help``, config errors
and the quick tests answer in seconds without loading them."""
