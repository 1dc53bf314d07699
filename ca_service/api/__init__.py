"""Flask shell: create_app, problem+json, auth, one blueprint per resource under v1/."""
