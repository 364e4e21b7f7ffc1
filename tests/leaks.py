"""Finding hidden test code in what a submission printed or wrote, whatever the encoding.

A leak is judged by decoding, not by searching for plain text: every run of base64 or hex
characters is decoded (and decompressed when it is zlib or gzip data), rot13 is undone, twice
over, and each reading is searched for the lines of the source notebooks' hidden test regions
that appear nowhere in the release.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import zlib
from functools import lru_cache
from pathlib import Path


import builder

BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")
HEX = re.compile(r"(?:[0-9a-fA-F]{2}){12,}")
MIN_LINE = 20  # shorter hidden lines (``### END HIDDEN TESTS``, ``else:``) say nothing


@lru_cache(maxsize=None)
def hidden_lines() -> frozenset[str]:
    """Lines of hidden test regions (stripped, at least MIN_LINE long) that the release lacks."""
    hidden, public = set(), set()
    for nb in builder.source().values():
        for cell in nb.cells:
            inside = False
            for line in cell.source.splitlines():
                if "BEGIN HIDDEN TESTS" in line:
                    inside = True
                elif "END HIDDEN TESTS" in line:
                    inside = False
                elif inside and len(line.strip()) >= MIN_LINE:
                    hidden.add(line.strip())
    for nb in builder.release().values():
        for cell in nb.cells:
            public.update(line.strip() for line in cell.source.splitlines())
    return frozenset(hidden - public)


def _unpack(data: bytes) -> list[bytes]:
    """``data``, and what it inflates to as zlib or gzip data (as far as it goes: a stream cut
    short by an output limit still gives its beginning)."""
    out = [data]
    for wbits in (zlib.MAX_WBITS, 16 + zlib.MAX_WBITS):
        try:
            inflated = zlib.decompressobj(wbits).decompress(data)
        except zlib.error:
            continue
        if inflated:
            out.append(inflated)
    return out


def readings(text: str, depth: int = 2) -> list[str]:
    """``text`` and everything it decodes to (base64, hex, zlib, gzip, rot13), ``depth`` levels."""
    found = [text, codecs.encode(text, "rot13")]
    if depth == 0:
        return found
    blobs = []
    for token in BASE64.findall(text):
        try:
            blobs.append(base64.b64decode(token + "=" * (-len(token) % 4)))
        except (binascii.Error, ValueError):
            pass
    for token in HEX.findall(text):
        blobs.append(bytes.fromhex(token))
    for blob in blobs:
        for data in _unpack(blob):
            decoded = data.decode("utf-8", "replace")
            if decoded != text:
                found += readings(decoded, depth - 1)
    return found


def leaked(texts) -> set[str]:
    """The hidden lines that any reading of any of ``texts`` contains."""
    lines = hidden_lines()
    found = set()
    for text in texts:
        for reading in readings(text):
            found.update(line for line in lines if line in reading)
    return found


def notebook_texts(nb) -> list[str]:
    """Everything the student's code could have printed or displayed in a graded notebook, as
    text: every stream and display output, and the errors of answer cells. (The error of a check
    cell is the checker's own record, for TAs: its traceback quotes the check's code, hidden part
    included, and the feedback shows none of it.)"""
    texts = []
    for cell in nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        is_check = meta.get("grade") and not meta.get("solution")
        for out in cell.get("outputs", []):
            if "text" in out:
                texts.append(out["text"])
            texts.extend(str(v) for v in out.get("data", {}).values())
            if out.get("output_type") == "error" and not is_check:
                texts.extend(out.get("traceback", []))
                texts.append(out.get("evalue", ""))
    return texts


def folder_texts(folder: Path) -> list[str]:
    """Every file a submission left in its autograded folder, other than the graded notebooks."""
    return [p.read_text(errors="replace") for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix != ".ipynb" and p.stat().st_size < 50_000_000]
