"""Web forms: the request form (``request_form``) around a form generated from a
blueprint's JSON Schema (``schema_form``)."""

from accounts_app.forms.request_form import (
    PURPOSE_CHANGED,
    SERVICE_FIELD_NAMES,
    RequestMetaForm,
    expiry_datetime,
    production_locks,
    with_values,
)
from accounts_app.forms.schema_form import ArrayGroup, ScalarField, SchemaForm, child_path

__all__ = [
    "PURPOSE_CHANGED",
    "SERVICE_FIELD_NAMES",
    "ArrayGroup",
    "RequestMetaForm",
    "ScalarField",
    "SchemaForm",
    "child_path",
    "expiry_datetime",
    "production_locks",
    "with_values",
]
