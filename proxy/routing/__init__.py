"""Where a charger's link goes and how it proves who it is: routes, credentials, the registry."""
