"""One exception type for mistakes a user can fix (bad path, unknown name, bad config).

Entry scripts catch :class:`UserError`, print its message as one line on stderr and exit
with code 2. Anything else is a bug and may raise with a traceback.
"""
import sys


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit code 2."""


def exit_on_user_error(main):
    """Run ``main()``; turn a :class:`UserError` into one stderr line and exit code 2."""
    try:
        return main()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
