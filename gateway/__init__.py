"""Coalition gateway: the core of the coalition loyalty network."""
