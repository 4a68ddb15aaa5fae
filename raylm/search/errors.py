"""The search layer's error: a study that cannot run as configured."""


class SearchError(Exception):
    """A study that cannot run as configured; the message names the field or option."""
