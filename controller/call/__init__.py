"""One call: the TaskGroup that owns its bridge, media and model session."""
