"""Reaching a server: the typed `ServerClient`, the transports (local socket, paramiko,
system ssh), SSH host keys, and connecting to a configured entry."""
