"""``posereg serve``: the HTTP API (FastAPI on uvicorn) and the browser demo page.

Needs the ``serve`` extra (``pip install 'posereg[serve]'``). :func:`create_app` builds the ASGI
app around a :class:`posereg.predict.Predictor`; the schema of every answer is in
:mod:`posereg.serve.schema` and published as OpenAPI at ``/docs``. See docs/serve.md.
"""

from __future__ import annotations

__all__ = ["create_app", "ServeSettings"]


def __getattr__(name: str):  # FastAPI is imported when the app is built, not with the package
    if name in __all__:
        from posereg.serve import app

        return getattr(app, name)
    raise AttributeError(name)
