"""Talking to the signaling cluster through its socket.io Redis adapter: who is attached, telling
the servers a guest left, fencing a stale socket, asking whether a socket is still held. Every
such call passes the gate (safety/)."""
