"""factory_boy factories for the portal's models."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth.models import Group, User

from accounts_app.models import Account, AccountRequest
from pipelines.models import PipelineRun, StageRun


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "pw-for-tests-1")

    @factory.post_generation
    def roles(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        if create and extracted:
            for name in extracted:
                self.groups.add(Group.objects.get_or_create(name=name)[0])
        if create:
            self.save()


SANDBOX_CONFIG = {
    "cidr": "10.20.0.0/16",
    "dns_zone": "acme-demo.internal",
    "instance_size": "small",
    "services": [{"name": "web"}, {"name": "orders", "database": True}],
}


class AccountFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Account

    name = factory.Sequence(lambda n: f"acct-{n}")
    blueprint = "sandbox"
    config = factory.LazyAttribute(lambda a: dict(SANDBOX_CONFIG))
    purpose = "qa"
    owner = factory.SubFactory(UserFactory)


class AccountRequestFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = AccountRequest

    account = factory.SubFactory(AccountFactory)
    requested_by = factory.SelfAttribute("account.owner")
    config = factory.SelfAttribute("account.config")
    purpose = factory.SelfAttribute("account.purpose")


class PipelineRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PipelineRun

    account = factory.SubFactory(AccountFactory)
    kind = "provision"
    status = "succeeded"


class StageRunFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = StageRun

    run = factory.SubFactory(PipelineRunFactory)
    position = factory.Sequence(lambda n: n + 1)
    kind = "render"
    status = "succeeded"
    attempt = 1
