"""Running events: the executor, the HTTP client that calls services, and the workers."""
