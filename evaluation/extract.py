"""Final-answer extraction from a model response.

The answer is the content of the last ``\\boxed{...}`` (or ``\\fbox{...}``); when the response has
none, fallbacks look for "The (final) answer is ...", "Answer: ..." and GSM8K-style "#### ...".
Extraction is linear in the response length and never recurses, so megabyte-long or deeply nested
inputs cannot blow the stack or hang.
"""
from __future__ import annotations

import re

_BOX_MARKERS = ("\\boxed", "\\fbox")
# Only the tail of a response is searched by the regex fallbacks (bounded work on huge inputs).
_FALLBACK_WINDOW = 4000
# A boxed answer longer than this is not an answer; bounding the scan keeps extraction linear.
_MAX_BOX_SCAN = 20000
_MAX_BOX_TRIES = 8
_FALLBACK_PATTERNS = [
    re.compile(r"(?:final\s+answer|the\s+answer)\s*(?:is|:)\s*:?\s*(.{1,300}?)\s*(?:\n|$|\.\s|\.$)", re.I),
    re.compile(r"answer\s*:\s*(.{1,300}?)\s*(?:\n|$|\.\s|\.$)", re.I),
    re.compile(r"####\s*(.{1,300}?)\s*(?:\n|$)"),
]


def _match_braces(text: str, open_idx: int) -> str | None:
    """Return the content of the brace group that opens at ``text[open_idx] == '{'``."""
    depth = 0
    for i in range(open_idx, min(len(text), open_idx + _MAX_BOX_SCAN)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_idx + 1 : i]
    return None


def _boxed_content(text: str, start: int) -> str | None:
    """Content after a ``\\boxed`` marker ending at ``start``: ``{...}`` or ``\\boxed 5`` form."""
    rest = text[start : start + 1]
    if rest == "{":
        return _match_braces(text, start)
    if rest == " ":
        m = re.match(r" +([^\s$]+)", text[start : start + 300])
        return m.group(1) if m else None
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}``/``\\fbox{...}`` in ``text``, or None."""
    positions = sorted(
        (m.end() for marker in _BOX_MARKERS for m in re.finditer(re.escape(marker), text)),
        reverse=True,
    )
    for end in positions[:_MAX_BOX_TRIES]:
        content = _boxed_content(text, end)
        if content is not None:
            return content
    return None


def _fallback(text: str) -> str | None:
    tail = text[-_FALLBACK_WINDOW:]
    for pattern in _FALLBACK_PATTERNS:
        matches = list(pattern.finditer(tail))
        if matches:
            return matches[-1].group(1)
    return None


def clean_answer(ans: str) -> str:
    """Strip math delimiters, whitespace and a trailing period from an extracted answer."""
    ans = ans.strip()
    for left, right in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if ans.startswith(left) and ans.endswith(right) and len(ans) >= len(left) + len(right):
            ans = ans[len(left) : len(ans) - len(right)].strip()
    ans = ans.rstrip(".").strip()
    return ans


def extract_answer(response: str) -> str | None:
    """The final answer of ``response`` (cleaned), or None when it states none."""
    if not isinstance(response, str) or not response:
        return None
    ans = last_boxed(response)
    if ans is None:
        ans = _fallback(response)
    if ans is None:
        return None
    ans = clean_answer(ans)
    return ans or None
