"""The scaled mode's cache: Django's Redis cache that keeps working while Redis does not.

The cache holds the API's throttle counters (DRF), read and written on every
API request. With redis-py's defaults a hung Redis held each request for
seconds and a refusing one answered 500. Here every command is bounded
(`redis_guard.client_options`), and while Redis fails the cache is this
process's memory: throttling goes on per process, and Redis is tried again
after a back-off (`redis_guard.Outage`).
"""

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from redis.exceptions import RedisError

from dashboard.redis_guard import Outage, client_options

_outages = {}  # location -> Outage: Django makes a cache object per thread, one outage is the process's


def _with_fallback(name):
    """Return the cache method `name`: on Redis unless it failed recently, else (or when it fails now) in memory."""

    def method(self, *args, **kwargs):
        if not self.outage.skip():
            try:
                result = getattr(RedisCache, name)(self, *args, **kwargs)
            except (RedisError, OSError) as error:
                self.outage.failed(error)
            else:
                self.outage.answered()
                return result
        return getattr(self.local, name)(*args, **kwargs)

    method.__name__ = name
    return method


class RedisCacheWithFallback(RedisCache):
    def __init__(self, server, params):
        params = {**params, "OPTIONS": {**client_options(), **params.get("OPTIONS", {})}}
        super().__init__(server, params)
        # LocMemCache shares its data between the instances of one name: every thread sees the same fallback.
        self.local = LocMemCache(f"redis-fallback:{server}", {"TIMEOUT": params.get("TIMEOUT", 300)})
        self.outage = _outages.setdefault(str(server), Outage("the cache (API throttling)"))

    add = _with_fallback("add")
    get = _with_fallback("get")
    set = _with_fallback("set")
    touch = _with_fallback("touch")
    delete = _with_fallback("delete")
    get_many = _with_fallback("get_many")
    has_key = _with_fallback("has_key")
    incr = _with_fallback("incr")
    set_many = _with_fallback("set_many")
    delete_many = _with_fallback("delete_many")
    clear = _with_fallback("clear")
