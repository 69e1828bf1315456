"""The service's endpoints, one router per resource; ``api.app`` assembles them."""
