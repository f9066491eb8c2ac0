"""Probes: the only code in opsready that talks to the outside world.

One module per kind of system. Every call has a timeout, and every failure to judge
raises a ``ProbeError`` subclass (see ``opsready._errors``).
"""
