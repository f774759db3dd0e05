"""``python -m controller.modelserver`` runs the local Realtime test peer."""

from controller.modelserver.command import main

raise SystemExit(main())
