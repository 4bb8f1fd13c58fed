"""Create, list and revoke personal REST API tokens.

    manage.py api_token create --user alice --name ci-deploy [--days 30]
    manage.py api_token list [--user alice]
    manage.py api_token revoke <token start, as listed> [--user alice]

The token is printed once, by create; only its digest is stored.
"""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from routing import tokens
from routing.models import ApiToken

ACTOR = "command:api_token"


class Command(BaseCommand):
    help = "Create, list or revoke REST API tokens (hashed, named, expiring)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        create = actions.add_parser("create", help="Create a token and print it (once).")
        create.add_argument("--user", required=True)
        create.add_argument("--name", required=True, help="What the token is for")
        create.add_argument("--days", type=int, default=None,
                            help="Lifetime in days (default: WEATHERVANE_API_TOKEN_DAYS)")
        listing = actions.add_parser("list", help="List tokens that have not expired.")
        listing.add_argument("--user")
        revoke = actions.add_parser("revoke", help="Revoke a token by the start shown in list.")
        revoke.add_argument("token_key")
        revoke.add_argument("--user")

    def handle(self, *args, action, **options):
        getattr(self, f"handle_{action}")(**options)

    def _user(self, username):
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            raise CommandError(f"No user named {username!r}.")
        return user

    def handle_create(self, user, name, days, **options):
        try:
            token, plaintext = tokens.issue(self._user(user), name, days, actor=ACTOR)
        except tokens.TokenError as error:
            raise CommandError(str(error)) from None
        self.stderr.write(f"Token {token.name!r} for {user}, valid until {token.expiry:%Y-%m-%d %H:%M} UTC. "
                          "It is shown only now:")
        self.stdout.write(plaintext)

    def handle_list(self, user=None, **options):
        found = ApiToken.objects.select_related("user").order_by("user__username", "-created")
        if user:
            found = found.filter(user=self._user(user))
        for token in found:
            state = f"until {token.expiry:%Y-%m-%d %H:%M}" if token.expiry else "no expiry"
            state = "expired" if token.expired() else state
            self.stdout.write(f"{token.token_key}  {token.user.get_username():<20} {token.name:<30} {state}")

    def handle_revoke(self, token_key, user=None, **options):
        found = ApiToken.objects.filter(token_key=token_key)
        if user:
            found = found.filter(user=self._user(user))
        matches = list(found.select_related("user")[:2])
        if len(matches) != 1:
            raise CommandError("No such token." if not matches else "Several tokens start so; add --user.")
        tokens.revoke(matches[0], actor=ACTOR)
        self.stdout.write(f"Revoked {matches[0]}.")
