"""Sandboxed math-verify worker: a standalone script run as a child process by ``verifier_pool``.

Protocol (JSON lines): reads ``{"a": answer, "g": gold}`` on stdin, writes ``{"r": reason}`` on stdout,
where reason is ``correct``, ``wrong`` or ``parse_error``. The first line written is ``{"ready": true}``.
Only LaTeX extraction is used (math-verify's plain-expression extraction calls sympy's ``parse_expr``,
which evaluates Python), so untrusted text is never executed. Address space is capped by
``RLIMIT_AS``; the parent enforces the wall-clock timeout by killing this process.
"""
import json
import logging
import os
import resource
import sys
import threading
import time


def _limit_memory(mem_mb: int) -> None:
    if mem_mb > 0:
        limit = mem_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _watch_parent(parent_pid: int) -> None:
    """Exit when the parent process dies (so a stuck computation is not left behind)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def main() -> None:
    mem_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 2048
    sys.setrecursionlimit(3000)
    logging.disable(logging.CRITICAL)
    from functools import lru_cache

    from math_verify import LatexExtractionConfig, parse, verify

    config = [LatexExtractionConfig()]

    @lru_cache(maxsize=4096)
    def parse_gold(gold: str):
        return parse("\\boxed{" + gold + "}", extraction_config=config, parsing_timeout=None)

    def judge(answer: str, gold: str) -> str:
        gold_parsed = parse_gold(gold)
        pred = parse("\\boxed{" + answer + "}", extraction_config=config, parsing_timeout=None)
        if not gold_parsed or not pred:
            return "parse_error"
        ok = verify(gold_parsed, pred, timeout_seconds=None)
        return "correct" if ok else "wrong"

    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    _limit_memory(mem_mb)
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reason = judge(str(req["a"]), str(req["g"]))
        except (MemoryError, RecursionError):
            reason = "parse_error"
        except Exception:  # noqa: BLE001 - any failure of the parser is a parse error
            reason = "parse_error"
        out.write(json.dumps({"r": reason}) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
