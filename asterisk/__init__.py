"""Asterisk configuration shared by the Docker image and the sandbox (:mod:`asterisk.sandbox`).

A package only so the tests can ``import asterisk.sandbox``; the sandbox
also runs as a script: ``python asterisk/sandbox.py --help``.
"""
