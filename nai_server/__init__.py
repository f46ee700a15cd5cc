"""nai-server: the daemon that shares a GPU server's GPUs between its users."""

__version__ = "0.1.0"
