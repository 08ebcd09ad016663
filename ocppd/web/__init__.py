"""The installer's web page (off unless ``[web] enabled = true``): see ocppd.web.server."""

from ocppd.web.server import WebServer

__all__ = ["WebServer"]
