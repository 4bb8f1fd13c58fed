"""REST API of alert channels and their delivery log (under /api/v1/)."""
