"""``remotellm-broker serve`` (placeholder until the broker server lands)."""

import click


@click.command()
def serve() -> None:
    """Run the broker."""
    raise click.ClickException("not implemented yet")
