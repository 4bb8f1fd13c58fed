"""Regular expressions that users write (alert matchers, a probe's expected answer): one compile helper on RE2.

Python's `re` backtracks: a nested quantifier such as `(a+)+$` on a 25-character label runs for seconds and,
holding the GIL, stalls every thread of the process (the embedded gateway included). RE2 runs in time linear in
the input, whatever the pattern. It has no backreferences or lookarounds: such a pattern is refused when it is
saved (`PatternInvalid`, the same engine as at match time), never accepted and then failing in the alert tick.
"""

from functools import lru_cache

import re2

MAX_PATTERN = 500  # characters; also caps what RE2 builds from it
MAX_MEMORY = 8 << 20  # bytes RE2 may use for one compiled pattern (a{1000}{1000} and the like fail to compile)

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # RE2 would otherwise print the pattern to stderr, outside the process's logging
_OPTIONS.max_mem = MAX_MEMORY


class PatternInvalid(ValueError):
    """A pattern RE2 cannot run; the message says why."""


def check_pattern(pattern):
    """Return `pattern` when RE2 can run it; raise PatternInvalid saying why not."""
    compile_pattern(pattern)
    return pattern


@lru_cache(maxsize=1024)
def compile_pattern(pattern):
    """Return the compiled RE2 pattern (cached: the alert tick matches the same few patterns again and again).

    Raises PatternInvalid for text over MAX_PATTERN characters or a pattern RE2 does not accept.
    """
    if not isinstance(pattern, str) or len(pattern) > MAX_PATTERN:
        raise PatternInvalid(f"a regular expression is text of at most {MAX_PATTERN} characters.")
    try:
        return re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise PatternInvalid(f"not a regular expression the linear-time engine (RE2) runs: {reason} "
                             "(backreferences and lookarounds are not supported).") from None
