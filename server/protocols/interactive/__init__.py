"""Our own interactive API: prompts, masks, undo and reset on AIAA sessions (``/v1/interactive/...``)."""
