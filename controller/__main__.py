"""``python -m controller`` is the same as the ``ari-realtime`` command."""

from controller.cli import main

raise SystemExit(main())
