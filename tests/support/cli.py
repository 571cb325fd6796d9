"""Running the `reaper` command in-process, as an operator would."""

from click.testing import CliRunner

from reaper.app.cli import cli


def invoke(args: list[str], env: dict):
    """The click result; a crash (anything but a clean exit) fails the test with its output."""
    result = CliRunner().invoke(cli, args, env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"reaper {' '.join(args)} crashed:\n{result.output}") from result.exception
    return result
