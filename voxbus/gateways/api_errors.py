"""Errors in OpenAI's JSON shape, mapped from voxbus's own.

OpenAI clients read `{"error": {"message", "type", "param", "code"}}` and the HTTP status (the
`openai` package raises BadRequestError for 400, NotFoundError for 404, RateLimitError for 429,
InternalServerError for 5xx...). voxbus's ModelErrors already carry a status; a few are mapped
to the one OpenAI clients know for the same case (an overloaded model is a 429 with Retry-After,
which the client honours).
"""

from __future__ import annotations

import math

from starlette.responses import JSONResponse

from voxbus.errors import AudioFileError, InvalidName, ModelError, VoxbusError

TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
"""OpenAI's error types by status; any other 4xx is an invalid_request_error, 5xx a server_error."""
REMAP = {"overloaded": 429, "model_busy": 429, "unknown_model": 404}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.retry_after = status, message, code, param, retry_after

    def response(self) -> JSONResponse:
        kind = TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        body = {"error": {"message": self.message, "type": kind,
                          "param": self.param, "code": self.code}}
        headers = {"Retry-After": str(max(1, math.ceil(self.retry_after)))} if self.retry_after else None
        return JSONResponse(body, status_code=self.status, headers=headers)


def from_exception(exc: Exception) -> ApiError:
    """Any error a handler let through, as the API answers it."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, TimeoutError):  # (asyncio's too: a wait the gateway put a bound on)
        return ApiError(504, "the request took longer than this gateway waits (http.transcribe_timeout)", "timeout")
    if isinstance(exc, ModelError):
        return ApiError(REMAP.get(exc.code, exc.status), exc.message, exc.code, retry_after=exc.retry_after)
    if isinstance(exc, AudioFileError):
        return ApiError(400, str(exc), "invalid_audio", "file")
    if isinstance(exc, InvalidName):
        return ApiError(400, str(exc), "invalid_name")
    if isinstance(exc, VoxbusError):
        return ApiError(500, str(exc), "voxbus_error")
    return ApiError(500, f"internal error: {type(exc).__name__}", "internal_error")
