"""The labeling web app (FastAPI + Jinja2 + a little vanilla JS)."""

from rlhf.feedback.web.app import create_app

__all__ = ["create_app"]
