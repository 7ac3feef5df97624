"""The ``remotellm-connector`` command line."""

import click

from remotellm_connector.__about__ import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="remotellm-connector")
def main() -> None:
    """Share the LLM on this machine with your team through a remotellm broker."""
