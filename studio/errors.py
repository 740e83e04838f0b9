"""The exception type for mistakes a user can make (its message is a single sentence naming the fix), and the
warning type for what the studio decided on the user's behalf (said as one ``studio: note:`` line)."""


class StudioError(ValueError):
    """A user-facing error (bad model name, target, image path, spec) with a one-sentence message."""


class MemoryShortage(StudioError):
    """A request that would not fit the device's free memory, refused before anything is allocated;
    ``fits`` is the largest batch that would (0 when not even one image fits)."""

    def __init__(self, message: str, fits: int) -> None:
        super().__init__(message)
        self.fits = fits


class StudioNote(UserWarning):
    """Something the studio chose for the user (an inferred input spec, a rescaled image range), said once."""
