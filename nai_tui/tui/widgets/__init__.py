"""Widgets of the terminal UI; each reusable one carries its own DEFAULT_CSS."""
