"""Events of the request workflow that other parts of it listen to."""

from django.dispatch import Signal

# sender=Account class, account=the production Account, change=str (what changed, in
# words). Sent in the transaction that changed production's registration.
production_changed = Signal()
