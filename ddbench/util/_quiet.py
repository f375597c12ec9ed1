"""Known third-party notices that say nothing to a ddbench user, filtered by exact message only.

torch logs "No CUDA runtime is found, using CUDA_HOME=..." whenever `torch.utils.cpp_extension` is
imported (e.g. while a module is traced) on a machine with a CUDA toolkit but no usable GPU: on a CPU
run that is every run. Other records of that logger (real build errors) still get through.

torch.compile warns when it traces through a `functools.lru_cache`-wrapped function; the LD3M
generator's diffusers UNet calls one (`is_torch_version`, a pure function of torch's version), so
every compiled LD3M run printed that warning twice, with a stack, on its console.
"""

from __future__ import annotations

import logging
import warnings

#: logger name → message prefixes dropped from it
_NOTICES = {"torch.utils.cpp_extension": ("No CUDA runtime is found",)}
#: Python warnings (message regular expressions, matched at the start) dropped
_WARNINGS = (r"Dynamo detected a call to a `functools\.lru_cache`-wrapped function",)


class _DropNotices(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not (isinstance(record.msg, str) and record.msg.startswith(self.prefixes))


def silence_known_notices() -> None:
    """Install the filters (idempotent). The loggers need not exist yet: torch later gets these same
    objects from `logging.getLogger`, filters included, so nothing here imports torch."""
    for name, prefixes in _NOTICES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices(prefixes))
    for message in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=UserWarning)
