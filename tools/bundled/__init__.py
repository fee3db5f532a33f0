"""The bundled "ditfuse-tiny" model's builder: its constructed weights, fitted maps and recipe (`python -m tools.build_default_model`)."""
