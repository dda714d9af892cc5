"""How a secret is shown where people can see it: enough to recognise it, never to use it.

Its own module, with no dependency, because the box's command line shows masked codes too and
must not load the web stack to do it.
"""

from __future__ import annotations


def masked_code(code: str | None, hidden: str = "•" * 6) -> str:
    """``••••••1234``: enough to recognise a code, never enough to use it.

    ``hidden`` stands for the hidden part (the cloud's listings use ``…``); a code of 8
    characters or fewer shows nothing but that, and no code shows nothing at all.
    """
    if not code:
        return ""
    return hidden + code[-4:] if len(code) > 8 else hidden
