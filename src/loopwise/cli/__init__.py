"""The ``loopwise`` command line: run an agent on a task and watch it work."""
