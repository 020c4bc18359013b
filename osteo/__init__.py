"""osteo: osteoporosis screening from dental panoramic radiographs."""

__version__ = "0.2.0"
