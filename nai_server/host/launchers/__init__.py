"""Launchers: how a job is started, watched and signalled (local.py: processes on this host)."""
