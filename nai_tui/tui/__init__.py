"""The terminal UI: the app, its styles, palette and messages, screens/ and widgets/."""
