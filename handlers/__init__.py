"""One module per kind of message: each turns a parsed message and a snapshot into an Outcome."""
