"""Expected, user-facing errors.

Every error a user can cause with bad input (a missing data root, a wrong checkpoint, an unknown model name...)
is a :class:`DsgVizError`. Its message says what is wrong *and* how to fix it. The CLI prints it as one line and
exits with code 2; no traceback.
"""

from __future__ import annotations


class DsgVizError(Exception):
    """A user-facing error: one line saying what is wrong and how to fix it."""


class DataError(DsgVizError):
    """The data root, a split or a sample file is missing or malformed."""


class CheckpointError(DsgVizError):
    """A checkpoint cannot be loaded into the requested architecture."""


class ModelError(DsgVizError):
    """Unknown model name, duplicate registration, or a model lacking what an operation needs (e.g. BN)."""


class ConfigError(DsgVizError):
    """An option value is out of range or inconsistent."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped a run; the message says where and what was kept. The CLI prints
    ``interrupted: <message>`` and exits with code 130. A ``KeyboardInterrupt``, so code that catches those still
    does."""
