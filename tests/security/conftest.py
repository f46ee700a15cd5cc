"""Attacks as real unix users through the real daemon: the integration fixtures."""

from tests.integration.conftest import (  # noqa: F401 - fixtures, found by name
    Daemon,
    UnixUser,
    daemon,
    daemon_factory,
    make_user,
    sshd,
    sshd_factory,
    traversable,
)
