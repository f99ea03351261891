"""Errors a user can fix, atomic writes, the process set-up: what every other floor uses."""
