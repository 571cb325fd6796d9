"""The process's own limits: ``reaper run`` raises its soft limit of open files to the hard one,
so that a burst of connections (Redis, the services, the HTTP endpoint) does not run out of
descriptors at systemd's soft default of 1024 while the hard limit allows far more."""

from loguru import logger

try:
    import resource
except ImportError:  # not a POSIX system: nothing to raise
    resource = None

# What an unlimited hard limit means on Linux: the kernel's default fs.nr_open.
UNLIMITED_STANDIN = 1 << 20


def wanted_soft(soft: int, hard: int, unlimited: int) -> int | None:
    """The soft limit to ask for (the hard one, or a large finite one when the hard one is
    ``unlimited``), or None when the soft one is already there."""
    target = UNLIMITED_STANDIN if hard == unlimited else hard
    return None if soft == unlimited or soft >= target else target


def raise_open_files() -> None:
    """Soft RLIMIT_NOFILE up to the hard one; said at DEBUG, and a refusal only said."""
    if resource is None:
        logger.debug("Limits: no resource module on this platform; the open-files limit stays")
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted_soft(soft, hard, resource.RLIM_INFINITY)
    if target is None:
        logger.debug("Limits: open files {} (the hard limit {}), nothing to raise", soft, _said(hard))
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:  # a container or platform that refuses
        logger.debug("Limits: open files stays {}: raising it to {} was refused ({})", soft, target, exc)
        return
    logger.debug("Limits: open files raised from {} to {} (the hard limit {})", soft, target, _said(hard))


def _said(limit: int) -> str:
    return "unlimited" if resource is not None and limit == resource.RLIM_INFINITY else str(limit)
