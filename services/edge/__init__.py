"""The edge: authenticates browsers and streams their events as Server-Sent Events."""
