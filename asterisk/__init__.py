"""Asterisk configuration shared by the Docker image and the sandbox (:mod:`asterisk.sandbox`).

A package only so the tests can ``import asterisk.sandbox`` (whose code lives
in :mod:`asterisk.sandboxing`); the sandbox also runs as a command, from the
repository root: ``python3 -m asterisk.sandbox --help``.
"""
