"""FastAPI dependencies, as ``Annotated`` aliases routes declare by type."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.api.services.job_queue import JobQueue
from app.auth import owner_for
from app.settings import Settings
from app.storage import Storage

_bearer = HTTPBearer(auto_error=False, description="A token of RCMSEG_API_TOKENS; it names the owner.")


def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_queue(request: Request) -> JobQueue:
    return cast(JobQueue, request.app.state.jobs)


def get_storage(request: Request) -> Storage:
    return cast(Storage, request.app.state.storage)


def get_owner(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The owner named by the bearer token; 401 without a valid one.

    ``RequestGate`` checked the token before anything was read and left the owner in the request state;
    the check here stands for the OpenAPI schema (the bearer scheme) and for apps built without the gate.
    """
    checked = getattr(request.state, "owner", None)
    if isinstance(checked, str):
        return checked
    header = f"{credentials.scheme} {credentials.credentials}" if credentials is not None else None
    return owner_for(header, request.app.state.tokens)


SettingsDep = Annotated[Settings, Depends(get_settings)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
StorageDep = Annotated[Storage, Depends(get_storage)]
OwnerDep = Annotated[str, Depends(get_owner)]
