"""The engine: watching resources, queueing objects, processing their changes."""
