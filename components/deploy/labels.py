"""Kubernetes label values from free text: the one place a name becomes a label.

A KFP run's display name ("Run of churnflow-training 2026-11-27 03:00:00") has spaces and colons, and
the API server answers 422 to a label value that is not at most 63 characters of `[A-Za-z0-9._-]`,
alphanumeric at both ends. Everything we put into `metadata.labels` goes through `label_value`; the
full text, where it matters, goes into an annotation, which may hold anything.
"""

from __future__ import annotations

import hashlib
import re

MAX_LABEL_VALUE = 63
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")  # the API server's pattern, fullmatch
_INVALID = re.compile(r"[^A-Za-z0-9._-]+")
_HASH_CHARS = 8
# A KFP placeholder the driver did not resolve ("{{$.pipeline_job_name}}" before backend 2.5).
_UNRESOLVED = re.compile(r"\{\{\$\.[A-Za-z0-9_.\[\]'-]+\}\}")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]


def label_value(text: str) -> str:
    """A valid label value that reads like `text`: invalid runs become "-", the ends are trimmed to
    alphanumerics, and a text that had to be shortened (or had nothing usable) ends in 8 hex digits of
    its SHA-256, so two long names that share a prefix still get different labels."""
    if len(text) <= MAX_LABEL_VALUE and LABEL_VALUE.fullmatch(text):  # not match(): "$" admits a final "\n"
        return text
    cleaned = _INVALID.sub("-", text).strip("-_.")
    if not cleaned:
        return _digest(text) if text else ""
    if len(cleaned) <= MAX_LABEL_VALUE:
        return cleaned
    head = cleaned[: MAX_LABEL_VALUE - _HASH_CHARS - 1].rstrip("-_.")
    return f"{head}-{_digest(text)}"


def run_name(text: str) -> str:
    """The run name a step received, or "" when it is a KFP placeholder left unresolved: drivers
    before backend 2.5 pass `{{$.pipeline_job_name}}` on as literal text (KFP PR 11599), and that
    text must not become a label, an annotation or the model's metadata. `compile` and `submit` already
    replace it for such backends; this catches a spec compiled for a newer backend than runs it."""
    return "" if _UNRESOLVED.search(text or "") else text
