"""The pure core: plain data and the rules over it. No sockets, no database, no clock, no I/O library."""
