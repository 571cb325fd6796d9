"""How a sweep asks for many string keys' values: in MGETs of BATCH keys at most (~400 KB of
records, a millisecond or so of Redis each), so that no one command of ours holds Redis long."""

BATCH = 1000


def batches(names: list) -> list[list]:
    """``names`` cut into the key lists of MGETs, in order."""
    return [names[start:start + BATCH] for start in range(0, len(names), BATCH)]


def calls(count: int) -> int:
    """How many MGETs ``batches`` makes of ``count`` names."""
    return -(-count // BATCH)
