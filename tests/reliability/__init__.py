"""The hazards cnnlab survives: hostile files, names, folders and checkpoints (docs/reliability.md).

Each test's docstring names the hazard; `pytest tests/reliability -v` reads as the list."""
