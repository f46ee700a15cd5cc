"""Folder sync with a server's content-addressed store: scan, hash cache, packing, push
(push.py, which also gathers the public names the commands and the TUI use), pull, progress."""
