"""Delivery of alert notifications to channels, off the request and probe paths.

The contract between the alert engine and delivery (the engine calls only
these two functions):

- `enqueue(message, channel_ids)`: hand one `Message` to each enabled channel
  in `channel_ids`, asynchronously (a Celery task with retries and back-off
  in the scaled mode, the in-process worker in the embedded mode). Returns at
  once; never raises for a channel's failure (every attempt is logged).
- `send_test(channel)`: send a test notification to one channel now and
  return the logged delivery attempt.

The implementation lands with the channels work; until then calling either
is a programming error.
"""


def enqueue(message, channel_ids):
    raise NotImplementedError("alert delivery is not built yet")


def send_test(channel):
    raise NotImplementedError("alert delivery is not built yet")
