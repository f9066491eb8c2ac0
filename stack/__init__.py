"""The reference stack: a local, faithful stand-in for the audited platform (DESIGN §6)."""
