"""deploy/Dockerfile, checked without Docker: its instructions parse as Dockerfile syntax (continuation
lines, JSON exec form), what it copies exists, and its entry point is a `cnnlab serve` command line
whose flags the command has."""

from __future__ import annotations

import json
from pathlib import Path

import click

from cnnlab.cli.serve import serve_command

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order: comments and blank lines dropped, `\\` continuations joined."""
    parsed, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        parsed.append((keyword, arguments.strip()))
        pending = ""
    assert not pending, "the last instruction ends with a continuation"
    return parsed


def test_the_dockerfile_parses_and_runs_cnnlab_serve():
    parsed = instructions(DOCKERFILE.read_text())
    keywords = [keyword for keyword, _ in parsed]
    assert all(keyword in INSTRUCTIONS for keyword in keywords), keywords
    assert keywords[0] == "FROM" and parsed[0][1].startswith("python:3.11")
    for keyword, arguments in parsed:
        if keyword in ("COPY", "ADD"):
            *sources, _ = arguments.split()
            assert all((ROOT / source).exists() for source in sources), arguments
        if keyword in ("ENTRYPOINT", "CMD"):
            assert isinstance(json.loads(arguments), list)  # exec form: no shell between the signal and cnnlab
    entrypoint = json.loads(dict(parsed)["ENTRYPOINT"])
    assert entrypoint[:3] == ["cnnlab", "serve", "/model"]
    context = click.Context(serve_command)
    values = serve_command.parse_args(context, entrypoint[2:])
    assert values == [] and context.params["host"] == "0.0.0.0" and context.params["port"] == 8000
    assert dict(parsed)["EXPOSE"] == "8000" and dict(parsed)["USER"] != "root"
    assert "/health" in dict(parsed)["HEALTHCHECK"]
