"""Who is calling and what they may do: roles, the token file, the interceptor, audit lines.

Authentication is on when the server checks client certificates
(``tls_client_ca``) or has a token file (``auth_tokens``). Otherwise every
caller is the anonymous principal ``""`` with every role, as before
authentication existed. Only ``runguard.v1.RunGuardService`` is guarded:
health and reflection stay open, so probes and ``grpcurl list`` work.

A caller proves who it is with the metadata ``authorization: Bearer TOKEN``
(looked up in the token file) or else with its client certificate (the
principal is the certificate's first subject alternative name, or its
common name when it has none). A token that is sent must be known, whatever
certificate comes with it.

Roles::

    run     Begin, End, KeepAlive, Current, Watch, GetRun; Cancel of its own runs
    watch   Current, Watch, GetRun
    admin   everything: End with ``force``, Cancel of anybody's run

The token file, one principal's token per line (``#`` starts a comment)::

    # TOKEN                          PRINCIPAL   ROLES
    6jT0bQ0v2d6HqzA9xXkS1Yw4mPnR8cLf  worker-7    run
    Zq3LxW9sT1vK7bN2pE5rY8uA4dC6hJ0g  dashboard   watch
    -                                ops-alice   admin

A token is 16 to 512 visible ASCII characters; a principal 1 to 256 visible
characters; roles are comma-separated. A principal may have several tokens
(to rotate them). ``-`` instead of a token gives roles to a principal that
authenticates by certificate only. A certificate's principal has the roles
every line naming it gives (none: each call is PERMISSION_DENIED); without a
token file, every certificate the client CA signed has every role.

Tokens are kept only as SHA-256 digests and compared in constant time (every
known digest is compared, whichever matches). The file is reread on SIGHUP: a
file that does not parse keeps the old tokens, and the log says why (by line
number, never quoting a token). Open streams are not touched by a reload.

This module decides and logs; the status codes come from the one table in
``runguard.server.status``. No token ever reaches a log line.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import hashlib
import hmac
import inspect
import os
import re
import stat
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from runguard.contract import AUTHORIZATION
from runguard.server.errors import NotPermitted, RunGuardError, Unauthenticated
from runguard.server.status import status_of

__all__ = [
    "ANONYMOUS",
    "METHOD_ROLES",
    "AuthInterceptor",
    "Authenticator",
    "Principal",
    "Role",
    "TokenTable",
    "acting_as",
    "audit",
    "authorize",
    "current_principal",
    "load_tokens",
    "parse_tokens",
]

log = structlog.get_logger("runguard")


class Role(enum.Enum):
    """What a principal may do."""

    RUN = "run"
    """Take, renew and give back slots, and look at them: Begin, End, KeepAlive, Current,
    Watch, GetRun; and Cancel its own runs."""
    WATCH = "watch"
    """Only look: Current, Watch and GetRun."""
    ADMIN = "admin"
    """Everything, End with ``force``, and Cancel of anybody's run."""


ALL_ROLES = frozenset(Role)

METHOD_ROLES: Mapping[str, frozenset[Role]] = {
    "Begin": frozenset({Role.RUN, Role.ADMIN}),
    "End": frozenset({Role.RUN, Role.ADMIN}),
    "KeepAlive": frozenset({Role.RUN, Role.ADMIN}),
    "Current": frozenset({Role.RUN, Role.WATCH, Role.ADMIN}),
    "Watch": frozenset({Role.RUN, Role.WATCH, Role.ADMIN}),
    "GetRun": frozenset({Role.RUN, Role.WATCH, Role.ADMIN}),
    # A `run` principal may only cancel its own runs; the core checks whose it is.
    "Cancel": frozenset({Role.RUN, Role.ADMIN}),
    "ListGuards": frozenset({Role.RUN, Role.WATCH, Role.ADMIN}),
    "ConfigureGuard": frozenset({Role.ADMIN}),
}
"""Each RunGuardService method and the roles any one of which allows it."""


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name (shown in runs and audit lines) and its roles."""

    name: str
    roles: frozenset[Role] = field(default=ALL_ROLES)
    via: str = "none"
    """How it was authenticated: ``token``, ``certificate``, or ``none`` (auth off)."""


ANONYMOUS = Principal("", ALL_ROLES, "none")
"""Every caller when authentication is off."""

_PRINCIPAL: contextvars.ContextVar[Principal] = contextvars.ContextVar(
    "runguard_principal", default=ANONYMOUS
)


def current_principal() -> Principal:
    """The principal of the call being handled (set by the interceptor; anonymous without)."""
    return _PRINCIPAL.get()


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    """Handle the block's calls as ``principal``: how a front other than gRPC's
    interceptor (the HTTP one) hands the caller to the handlers."""
    token = _PRINCIPAL.set(principal)
    try:
        yield
    finally:
        _PRINCIPAL.reset(token)


# -- the token file --------------------------------------------------------------------

TOKEN_PATTERN = re.compile(r"[\x21-\x7e]{16,512}")
"""A token: 16 to 512 visible ASCII characters (it travels in an HTTP/2 header)."""

PRINCIPAL_PATTERN = re.compile(r"\S{1,256}")
"""A principal's name in the token file: 1 to 256 characters, no white space."""

CERTIFICATE_ONLY = "-"
"""The token column of a line that only gives roles to a certificate's principal."""

_COMMENT = re.compile(r"(^|\s)#.*$")


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "replace")).digest()


@dataclass(frozen=True, slots=True)
class TokenTable:
    """The parsed token file: token digests with their principals, and roles per principal."""

    tokens: tuple[tuple[bytes, Principal], ...] = ()
    roles: Mapping[str, frozenset[Role]] = field(default_factory=dict)

    def find(self, token: str) -> Principal | None:
        """The principal a token belongs to, or None; takes the same time for any token."""
        digest = _digest(token)
        found = None
        for known, principal in self.tokens:
            # No early exit and a constant-time comparison: the time taken does not
            # tell how much of a guess was right, nor which entry it matched.
            if hmac.compare_digest(known, digest):
                found = principal
        return found


def parse_tokens(text: str, source: str = "auth tokens") -> TokenTable:
    """Parse a token file (the format is in this module's docstring).

    Raises:
        ValueError: a line is malformed; the message names ``source`` and the
            line number, never a token.
    """
    tokens: list[tuple[bytes, Principal]] = []
    roles: dict[str, frozenset[Role]] = {}
    seen: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw).strip()
        if not line:
            continue
        where = f"{source} line {number}"
        fields = line.split()
        if len(fields) != 3:
            raise ValueError(
                f"{where}: expected TOKEN PRINCIPAL ROLE[,ROLE...] (3 fields), got {len(fields)}"
            )
        token, name, role_text = fields
        if not PRINCIPAL_PATTERN.fullmatch(name):
            raise ValueError(f"{where}: a principal is 1 to 256 characters without spaces")
        granted: set[Role] = set()
        for word in role_text.split(","):
            try:
                granted.add(Role(word))
            except ValueError:
                known = ", ".join(r.value for r in Role)
                raise ValueError(f"{where}: unknown role {word!r} (roles: {known})") from None
        roles[name] = roles.get(name, frozenset()) | frozenset(granted)
        if token == CERTIFICATE_ONLY:
            continue
        if not TOKEN_PATTERN.fullmatch(token):
            raise ValueError(
                f"{where}: a token is 16 to 512 visible ASCII characters "
                "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        digest = _digest(token)
        if digest in seen:
            raise ValueError(f"{where}: the same token as line {seen[digest]}")
        seen[digest] = number
        tokens.append((digest, Principal(name, frozenset(granted), "token")))
    return TokenTable(tuple(tokens), roles)


def load_tokens(path: str) -> TokenTable:
    """Read and parse a token file.

    Raises:
        ValueError: the file cannot be read or does not parse.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
            mode = os.fstat(handle.fileno()).st_mode
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read auth tokens {path}: {error}") from None
    table = parse_tokens(text, path)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "auth_tokens_readable_by_others",
            path=path,
            detail="the token file is readable by other users; chmod 600 it",
        )
    return table


# -- deciding --------------------------------------------------------------------------


class Authenticator:
    """Tells who a call comes from, with the current token table (reloadable)."""

    def __init__(self, *, tokens_path: str | None, client_certificates: bool) -> None:
        """Load the token file, if any.

        Raises:
            ValueError: the token file cannot be read or does not parse.
        """
        self._path = tokens_path
        self._certificates = client_certificates
        self._table = load_tokens(tokens_path) if tokens_path is not None else None

    @property
    def enabled(self) -> bool:
        """Whether callers must prove who they are."""
        return self._certificates or self._table is not None

    def reload(self) -> bool:
        """Reread the token file; a file that does not parse keeps the old tokens.

        Returns:
            Whether the new file is in force.
        """
        if self._path is None:
            log.info("auth_tokens_reload_skipped", detail="no --auth-tokens file to reload")
            return False
        try:
            table = load_tokens(self._path)
        except ValueError as error:
            log.error("auth_tokens_reload_failed", path=self._path, error=str(error), kept="old")
            return False
        self._table = table
        log.info("auth_tokens_reloaded", path=self._path, tokens=len(table.tokens))
        return True

    def roles_of(self, name: str) -> frozenset[Role]:
        """The roles the current token file gives ``name`` (none without a file)."""
        return frozenset() if self._table is None else self._table.roles.get(name, frozenset())

    def identify(self, metadata: Sequence[tuple[str, Any]], context: Any) -> Principal:
        """The principal a call comes from.

        Raises:
            Unauthenticated: no credentials, an unknown token, or a certificate
                that names nobody.
        """
        table = self._table
        header = next((value for key, value in metadata if key == AUTHORIZATION), None)
        if table is not None and header is not None:
            scheme, _, token = str(header).partition(" ")
            if scheme.lower() != "bearer" or not token:
                raise Unauthenticated("the authorization metadata must be 'Bearer TOKEN'")
            principal = table.find(token.strip())
            if principal is None:
                raise Unauthenticated("unknown bearer token")
            return principal
        if self._certificates:
            identities = list(context.peer_identities() or ())
            if not identities or not identities[0]:
                raise Unauthenticated("the client certificate names nobody (no SAN, no CN)")
            name = identities[0].decode("utf-8", "replace")
            roles = ALL_ROLES if table is None else table.roles.get(name, frozenset())
            return Principal(name, roles, "certificate")
        raise Unauthenticated("no credentials: send the metadata 'authorization: Bearer TOKEN'")


def authorize(principal: Principal, method: str, request: object) -> None:
    """Check that ``principal`` may make this call.

    Raises:
        NotPermitted: none of its roles allows the method, or an End with
            ``force`` comes from a principal without ``admin``.
    """
    needed = METHOD_ROLES.get(method, frozenset({Role.ADMIN}))
    has = ",".join(r.value for r in Role if r in principal.roles) or "none"
    if not principal.roles & needed:
        wants = " or ".join(r.value for r in Role if r in needed)
        raise NotPermitted(
            f"{method} needs the role {wants}; principal {principal.name!r} has {has}"
        )
    if method == "End" and getattr(request, "force", False) and Role.ADMIN not in principal.roles:
        raise NotPermitted(
            f"End with force needs the role admin; principal {principal.name!r} has {has}"
        )


# -- audit lines -------------------------------------------------------------------------

_AUDIT_TEXT_MAX = 128


def _short(value: object) -> str:
    text = value if isinstance(value, str) else ""
    return text if len(text) <= _AUDIT_TEXT_MAX else text[:_AUDIT_TEXT_MAX] + "…"


def _guard_of(request: object) -> str:
    guards = getattr(request, "guards", None)
    if guards is not None:
        return _short(",".join(str(g) for g in list(guards)[:8]))
    return _short(getattr(request, "guard", ""))


def audit(method: str, request: object, *, principal: Principal, peer: str, **what: Any) -> None:
    """Log one ``audit`` line: who did (or was refused) what, on which guard and run.

    Only names are logged (principal, guard, operation_id, peer address): never a
    token, a lease token, a route or a payload. Refusals are warnings.
    """
    emit = log.warning if "refused" in what else log.info
    emit(
        "audit",
        principal=principal.name,
        via=principal.via,
        method=method,
        guard=_guard_of(request),
        operation_id=_short(getattr(request, "operation_id", "")),
        peer=peer,
        **what,
    )


# -- the interceptor ---------------------------------------------------------------------


if TYPE_CHECKING:  # grpc-stubs make the base generic; at run time it is not subscriptable
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class AuthInterceptor(_Interceptor):
    """Authenticates and authorizes every call of one service; others pass untouched.

    Certificates and the request (End's ``force``) are only seen by the handler,
    so the handler is wrapped: the wrapper decides first, ends a refused call with
    the table's code (and an audit line), and otherwise runs the handler with the
    principal in :func:`current_principal`.
    """

    def __init__(self, authenticator: Authenticator, service: str) -> None:
        self._authenticator = authenticator
        self._prefix = f"/{service}/"

    async def intercept_service(
        self,
        continuation: Callable[[Any], Awaitable[Any]],
        handler_call_details: Any,
    ) -> Any:
        handler = await continuation(handler_call_details)
        path: str = handler_call_details.method
        if handler is None or not path.startswith(self._prefix):
            return handler
        method = path[len(self._prefix) :]
        metadata = tuple(handler_call_details.invocation_metadata or ())
        admit = self._admitter(method, metadata)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _guard_unary(handler.unary_unary, admit),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _guard_stream(handler.unary_stream, admit),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # RunGuardService has no client-streaming methods

    def _admitter(
        self, method: str, metadata: Sequence[tuple[str, Any]]
    ) -> Callable[[object, Any], Awaitable[Principal]]:
        async def admit(request: object, context: Any) -> Principal:
            principal = ANONYMOUS
            try:
                principal = self._authenticator.identify(metadata, context)
                authorize(principal, method, request)
            except (Unauthenticated, NotPermitted) as error:
                _refuse(method, request, context, principal, error)
                await context.abort(*status_of(error))
            return principal

        return admit


def _refuse(
    method: str, request: object, context: Any, principal: Principal, error: RunGuardError
) -> None:
    """The audit line of a refused call."""
    audit(
        method,
        request,
        principal=principal,
        peer=str(context.peer()),
        refused=type(error).__name__,
        reason=str(error),
    )


def _guard_unary(
    behavior: Callable[[Any, Any], Awaitable[Any]],
    admit: Callable[[object, Any], Awaitable[Principal]],
) -> Callable[[Any, Any], Awaitable[Any]]:
    async def guarded(request: Any, context: Any) -> Any:
        token = _PRINCIPAL.set(await admit(request, context))
        try:
            return await behavior(request, context)
        finally:
            _PRINCIPAL.reset(token)

    return guarded


def _guard_stream(
    behavior: Callable[[Any, Any], Any],
    admit: Callable[[object, Any], Awaitable[Principal]],
) -> Callable[[Any, Any], Any]:
    if inspect.isasyncgenfunction(behavior):

        async def guarded_generator(request: Any, context: Any) -> AsyncIterator[Any]:
            # Each call runs in a task of its own, so the principal set here
            # reaches only this call (a generator must not reset it: it may be
            # closed from another context).
            _PRINCIPAL.set(await admit(request, context))
            async for message in behavior(request, context):
                yield message

        return guarded_generator
    return _guard_unary(behavior, admit)
