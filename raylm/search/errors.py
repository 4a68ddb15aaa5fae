"""The search layer's error: a study that cannot run as configured."""

from raylm.errors import RaylmError


class SearchError(RaylmError):
    """A study that cannot run as configured; the message names the field or option."""
