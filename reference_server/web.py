from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from .settings import Settings


def install(app: FastAPI) -> None:
    return None


def frontend_app(settings: Settings, *, api_port: int) -> Any:
    return FastAPI()
