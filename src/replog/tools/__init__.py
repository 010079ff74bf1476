"""Tooling around replog, not part of a node: `replog bench`, its load generator, and local clusters of
real `replog` processes for the examples and the tests.

Nothing a node runs imports this package; the `replog` command imports it only inside the commands
that use it, so `replog master` and `replog secondary` never load it.
"""
