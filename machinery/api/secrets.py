"""The /secrets resource: register, list, read and delete the secrets services' headers name (admin only).

A value goes in and never comes out: every reply holds names, dates, where the secret comes from and
which services use it.
"""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from machinery import secrets
from machinery.api.body import Blueprint

bp = Blueprint("secrets", __name__, url_prefix="/secrets",
               description="Secrets: values services' headers name as {secret.NAME}; write-only, admin only")


class SecretValueSchema(Schema):
    """A secret's value, as registered."""

    value = fields.String(required=True, load_only=True, validate=validate.Length(min=1, max=secrets.MAX_VALUE_CHARS),
                          metadata={"description": "write-only: never answered"})


class SecretSchema(Schema):
    """A secret as answered: never its value."""

    name = fields.String(required=True)
    source = fields.String(metadata={"enum": ["stored", "environment"],
                                     "description": "registered here, or the variable MACHINERY_SECRET_<NAME>"})
    also_in_environment = fields.Boolean(metadata={"description": "a MACHINERY_SECRET_<NAME> variable exists "
                                                                  "too (the stored value wins)"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    used_by = fields.List(fields.String(), metadata={"description": "services whose headers name it"})


class SecretListSchema(Schema):
    items = fields.List(fields.Nested(SecretSchema))


def _keeper() -> secrets.Keeper:
    return current_app.extensions["machinery"].executor.secrets


@bp.route("")
class Secrets(MethodView):
    @bp.response(200, SecretListSchema)
    def get(self):
        """List secrets: names, dates and sources, never values"""
        return {"items": _keeper().list()}


@bp.route("/<name>")
class Secret(MethodView):
    @bp.arguments(SecretValueSchema)
    @bp.response(201, SecretSchema, description="Registered")
    @bp.alt_response(200, schema=SecretSchema, description="Replaced: calls from now on use the new value")
    def put(self, body, name):
        """Register a secret, or rotate the one of that name"""
        secret, created = _keeper().put(name, body["value"])
        return secret, 201 if created else 200

    @bp.response(200, SecretSchema)
    def get(self, name):
        """Read a secret's name, dates and users (never its value)"""
        return _keeper().get(name)

    @bp.response(204)
    def delete(self, name):
        """Delete a secret (refused while a service uses it)"""
        _keeper().delete(name)
