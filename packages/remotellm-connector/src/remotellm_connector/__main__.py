"""``python -m remotellm_connector``: the same as the ``remotellm-connector`` command."""

from remotellm_connector.cli import main

main()
