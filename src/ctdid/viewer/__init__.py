"""The interactive viewer of ``ctdid view``: browse, compare, measure and pick candidates.

:func:`view` serves a result folder of ``ctdid run`` on 127.0.0.1 and prints the page address;
:func:`create_app` is the ASGI application behind it.
"""

from ctdid.viewer.server import create_app, serve, serve_in_thread, view

__all__ = ["create_app", "serve", "serve_in_thread", "view"]
