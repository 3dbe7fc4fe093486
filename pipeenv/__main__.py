"""``python -m pipeenv`` runs the CLI."""

from pipeenv.cli import main

raise SystemExit(main())
