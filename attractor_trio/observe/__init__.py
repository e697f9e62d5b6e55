"""Events made readable: the human display, status reports, typed events, graph rendering."""
