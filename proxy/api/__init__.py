"""The partner API role: a REST API partners enrol customers with (FastAPI on hypercorn's Trio
worker). `app.create_app` builds the application, `role.run_api_role` serves it."""
