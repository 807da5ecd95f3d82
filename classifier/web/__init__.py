"""The review desk web app (FastAPI + Jinja2, server-rendered). Entry: `create_app`."""

from classifier.web.app import create_app, register_thesis_panel

__all__ = ["create_app", "register_thesis_panel"]
