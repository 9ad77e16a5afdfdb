"""The one exception type that means "the user can fix this": the CLI prints it as one line."""


class UserError(Exception):
    """A mistake in input, configuration or files; shown without a traceback."""
