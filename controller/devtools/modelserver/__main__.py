"""``python -m controller.devtools.modelserver`` runs the local Realtime test peer."""

from controller.devtools.modelserver.command import main

raise SystemExit(main())
