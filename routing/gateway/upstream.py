"""The one outbound seam of the gateway's hot path (aiohttp).

Every call has a connect timeout and a read timeout (time to first byte,
then idle time between chunks) from the provider, never follows redirects,
and refuses hosts that resolve to internal addresses unless
ALLOW_PRIVATE_UPSTREAMS (checked when connecting, so DNS rebinding cannot
slip past the check done when the provider was saved). Every failure is an
`UpstreamError` that says what happened and whether another try may help.
"""

import asyncio
import socket

import aiohttp
from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver
from django.conf import settings

from routing.netguard import is_internal
from routing.outcomes import Outcome, UpstreamError, http_failure

MAX_ERROR_BODY = 64 * 1024
USER_AGENT = "weathervane-gateway/1"


class GuardedResolver(AbstractResolver):
    """aiohttp's resolver plus the private-network policy of routing.netguard."""

    def __init__(self):
        self._inner = DefaultResolver()

    async def resolve(self, host, port=0, family=socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        if not settings.ALLOW_PRIVATE_UPSTREAMS:
            for info in infos:
                if is_internal(info["host"]):
                    raise OSError(f"upstream host {host} resolves to an internal address; "
                                  "set WEATHERVANE_ALLOW_PRIVATE_UPSTREAMS=true to allow it")
        return infos

    async def close(self):
        await self._inner.close()


def new_session():
    """Return the process's ClientSession (create it on the event loop that will use it)."""
    connector = aiohttp.TCPConnector(limit=1000, ttl_dns_cache=30, resolver=GuardedResolver(), keepalive_timeout=30)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("Accept-Encoding",),  # identity bodies: the gateway parses the stream
        headers={"User-Agent": USER_AGENT},
    )


def _connection_error(exc, timeout):
    if isinstance(exc, asyncio.TimeoutError):
        return UpstreamError(Outcome.TIMEOUT, f"no response within {timeout.sock_read:g} s", True)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamError(Outcome.CONNECT_ERROR, f"cannot connect: {exc.os_error or exc}", True)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return UpstreamError(Outcome.CONNECT_ERROR, "the upstream closed the connection before answering", True)
    return UpstreamError(Outcome.CONNECT_ERROR, f"connection failed: {type(exc).__name__}", True)


async def post(session, url, body, auth, timeout, request_id):
    """Send one POST and return the response once its headers arrived (any status).

    Raises UpstreamError for connection failures and timeouts.
    """
    headers = {"Authorization": auth, "Content-Type": "application/json", "X-Request-Id": request_id}
    try:
        return await session.post(url, data=body, headers=headers, timeout=timeout, allow_redirects=False)
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise _connection_error(exc, timeout) from None


async def failure(response, secret):
    """Return the UpstreamError for a non-2xx response (its body read, bounded), and release it.

    `secret` is the key sent with the request: redacted from the message.
    """
    try:
        body = await response.content.read(MAX_ERROR_BODY)
    except (TimeoutError, aiohttp.ClientError, OSError):
        body = b""
    finally:
        response.release()
    return http_failure(response.status, response.headers, body, (secret,))


async def read_all(response):
    """Return the whole body of a response. Raises UpstreamError (retryable: nothing was relayed yet)."""
    try:
        return await response.read()
    except TimeoutError:
        raise UpstreamError(Outcome.TIMEOUT, "the upstream stopped sending its answer", True) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(Outcome.TRUNCATED, f"the answer broke off ({type(exc).__name__})", True) from None
    finally:
        response.release()


async def read_chunk(response):
    """Return the next bytes of a streamed body (b"" at its end). Raises UpstreamError."""
    try:
        return await response.content.readany()
    except TimeoutError:
        raise UpstreamError(Outcome.TIMEOUT, "the stream went silent", True) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise UpstreamError(Outcome.TRUNCATED, f"the stream broke off ({type(exc).__name__})", True) from None
