"""Who may read what: anonymous visitors get aggregates, operators log in for private data.

Two credentials, kept apart so each holder gets only what it needs:
- `OPERATOR_TOKEN`, the people who run the service: stored photos, per-request history, raw
  error text, and approving quarantined labels (the Streamlit System page asks for it).
- `ADMIN_TOKEN`, a machine's: the DAG's `POST /admin/reload`.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header

from api.deps import SettingsDep
from api.errors import APIError
from utils.secret_policy import PLACEHOLDERS

OPERATOR_HINT = "Send the operator login as 'Authorization: Bearer <OPERATOR_TOKEN>'."


def _bearer_matches(authorization: str | None, token: str) -> bool:
    """Constant-time comparison; an unset or placeholder token never matches anything."""
    if not authorization or token.strip() in PLACEHOLDERS:
        return False
    return hmac.compare_digest(authorization.encode(), f"Bearer {token}".encode())


def is_operator(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> bool:
    """True for a request carrying the operator login; anonymous requests are not an error here
    (routes that show more to operators use this)."""
    return _bearer_matches(authorization, settings.operator_token)


def require_operator(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """401 without credentials, 403 with wrong ones."""
    if not authorization:
        raise APIError(401, "operator_login_required", f"This is private to operators. {OPERATOR_HINT}")
    if not _bearer_matches(authorization, settings.operator_token):
        raise APIError(403, "forbidden", "The operator login is wrong.")


IsOperator = Annotated[bool, Depends(is_operator)]
OperatorOnly = Depends(require_operator)
