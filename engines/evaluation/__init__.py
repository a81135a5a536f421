"""Offline inference over many cases and quality scoring (Dice, surface distances, reports)."""
