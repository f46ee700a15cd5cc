"""nai: the client — batch commands and the Textual TUI."""
