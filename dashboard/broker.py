"""kombu's Redis transport for Celery, without the crash that ends a worker whose broker went away mid-task.

When a worker loses Redis, Celery closes the broken connection. Closing the channel makes kombu put the
worker's unacknowledged messages (a task under way, prefetched and ETA tasks: acks_late holds them all) back
on the queue, through that same connection, which is gone by then: kombu 5.7.0 raises AttributeError
("'NoneType' object has no attribute 'hostname'"), which is not a connection error, so nothing catches it,
and the worker exits ("Unrecoverable error") and never comes back.

Here a channel whose connection is gone raises the connection error kombu expects, and the close goes on.
Nothing is lost: the messages stay in Redis's unacked index and are put back on the queue by any worker
once their visibility timeout has passed (WEATHERVANE_CELERY_VISIBILITY_TIMEOUT); the task under way keeps
running and its result is written (every task is safe to run twice).

Registered for redis:// and rediss:// broker URLs by dashboard.celery.
"""

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous=False):
        if self.connection.client is None:  # the connection this channel belonged to was closed
            raise RedisConnectionError("the broker connection was closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
