"""Who may do what on the bus: roles, credentials, permission errors (voxbus server --auth)."""
