"""Running the roles: configuration, processes and their supervisor, metrics, logs, the admin endpoint."""
