"""Readers for operator-graph profiles written by other tools."""

from pipeenv.importers.pipedream import from_pipedream, read_pipedream

__all__ = ["from_pipedream", "read_pipedream"]
