"""Uploaded volumes kept decoded in memory between requests, with expiry and a memory budget."""
