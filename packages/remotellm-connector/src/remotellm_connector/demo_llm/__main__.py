"""``python -m remotellm_connector.demo_llm``: same as ``remotellm-connector demo-llm``."""

from remotellm_connector.demo_llm.cli import main

main()
