"""Medical image data: reading and writing volumes, datalists, conversion, label maps and snapshots."""
