"""Wire protocols the server speaks, one package per protocol."""
