"""The operator's dashboard at /dashboard: every client's tasks, live, for IMAGEHOOK_ADMIN_KEY only."""
