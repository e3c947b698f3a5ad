"""ABCI 2.0 over a socket: varint framing, the connection loop, dispatch."""
