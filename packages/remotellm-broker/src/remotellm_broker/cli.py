"""The ``remotellm-broker`` command line."""

import click

from remotellm_broker.__about__ import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remotellm-broker")
def main() -> None:
    """Serve the OpenAI API for the LLMs your team's connectors share."""
