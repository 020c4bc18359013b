"""osteo: osteoporosis screening from dental panoramic radiographs."""

__version__ = "0.1.0"
