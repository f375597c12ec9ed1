"""What data a generator was trained on, guessed from where its weights lie (for report labels)."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

#: a weights path that names one of these is named after it (first match wins); ``cin256`` is the
#: class-conditional ImageNet LDM
KNOWN_GENERATOR_DATA = (("ffhq", "ffhq"), ("cin256", "imagenet"), ("imagenet", "imagenet"), ("cifar", "cifar10"))


def generator_from_path(path: Any) -> str:
    """``/m/stylegan-xl/ffhq256.pkl`` → ``ffhq``; a path naming no known data → its file's stem.

    The path is a heuristic; a suite's ``labels.generator`` names a row explicitly."""
    text = str(path).lower()
    for where in (PurePath(text).name, text):  # the file's own name first, then its folders
        for needle, name in KNOWN_GENERATOR_DATA:
            if needle in where:
                return name
    return PurePath(str(path)).stem or str(path)
