"""What stops the demo before it can show anything."""


class DemoError(Exception):
    """The demo cannot run; the message says why in one line (and how to fix it)."""
