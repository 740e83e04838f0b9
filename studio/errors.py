"""The one exception type for mistakes a user can make; its message is a single sentence naming the fix."""


class StudioError(ValueError):
    """A user-facing error (bad model name, target, image path, spec) with a one-sentence message."""
