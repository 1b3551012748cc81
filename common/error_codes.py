"""The platform's API error codes, by name, and ``InputError``, the one error a service raises for a request it
cannot honour.

Every ``ApiError`` (common/api.py) and every other error body of the API names its code here, never as a
literal. The codes are the platform's, so SDK users' code that checks them keeps working."""

from __future__ import annotations

NOT_SIGNED_IN = "1000"  # the console's own chat endpoint, without a session
NO_AUTH = "1001"  # the Authorization header is missing or not "Bearer <key>"
BAD_KEY = "1002"  # the key or its JWT is malformed, unknown or wrongly signed
TOKEN_EXPIRED = "1003"
KEY_DISABLED = "1004"  # the key is revoked or its account disabled
BAD_BODY = "1210"  # the body cannot be read, is not JSON or is too large
TOO_LARGE = "1213"  # an uploaded file over DATASET_MAX_BYTES
BAD_PARAM = "1214"  # a parameter is missing or has a wrong value
IN_USE = "1215"  # a file that trained a task cannot be deleted
PROMPT_TOO_LONG = "1261"  # the prompt leaves no room for the answer in the model's context
TOO_MANY_RUNNING = "1302"  # the user's concurrent serving calls
RATE_LIMITED = "1303"  # requests a minute with one key
TOO_MANY_FAILURES = "1305"  # failed authentications a minute from one address


class InputError(Exception):
    """A request a service cannot honour, with a message for the user: ``param`` names the field at fault and
    ``code`` the kind of refusal (a code above, or a name such as ``"quota_exceeded"``). Each app's services
    subclass it (``JobInputError``, ``DatasetError``, ``DeploymentInputError``) with their own default code; the
    API answers one with ``ApiError.from_input``, a form adds it to its field."""

    default_code = BAD_PARAM

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code or self.default_code
