"""The ConfigError a bad configuration raises, to read its message."""

import pytest

from reaper.core.config import load_config
from reaper.core.errors import ConfigError


def config_error(source) -> ConfigError:
    """The ConfigError of ``source``: a call that loads a configuration, or an environment
    (dict) loaded with no file."""
    call = (lambda: load_config(None, source)) if isinstance(source, dict) else source
    with pytest.raises(ConfigError) as caught:
        call()
    return caught.value
