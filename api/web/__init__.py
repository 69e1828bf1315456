"""The inspectors' workbench, served by ``secm serve`` at ``/`` beside the JSON API."""

from api.web.pages import router

__all__ = ["router"]
