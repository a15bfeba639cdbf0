"""Decisions a gateway makes, free of I/O: addresses, bans, routing, threading, commands, time."""
