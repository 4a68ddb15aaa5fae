"""The one base of every error raylm expects a user to fix; each CLI prints its message on one line and exits 2."""


class RaylmError(Exception):
    """A mistake in a config, a dataset, a model name, a study or the cluster; the message names it and the fix."""
