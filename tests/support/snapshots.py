"""What a Redis holds, to compare before and after: equal snapshots mean nothing was written."""


def snapshot(r) -> dict[bytes, tuple]:
    """Every key: (type, DUMP of its value, whether it expires)."""
    return {key: (r.type(key), r.dump(key), r.pttl(key) > 0) for key in r.scan_iter(count=1000)}
