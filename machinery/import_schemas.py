"""Marshmallow schemas of POST /services/import: its options, its body when not a document, its report."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from machinery.schemas import NAME_PATTERN

OUTCOMES = ("created", "replaced", "would create", "would replace", "skipped", "refused")


class OperationIdList(fields.Field):
    """operationIds as a list, or as one comma-separated string (the query string's form)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        if not isinstance(value, list) or not all(isinstance(item, str) and 0 < len(item) <= 200 for item in value):
            raise ValidationError("must be operationIds: a list of strings or one comma-separated string")
        if len(value) > 1000:
            raise ValidationError("at most 1000 operationIds")
        return value


class ImportOptionsSchema(Schema):
    """How to import: as query parameters, or beside `url` or `document` in the body."""

    class Meta:
        unknown = EXCLUDE

    prefix = fields.String(validate=[validate.Length(max=60), validate.Regexp(
        NAME_PATTERN, error="must start with a letter or digit and hold only letters, digits, '_', '.' and '-'")],
        metadata={"description": "put before every service name (petstore- makes petstore-findPets)"})
    base_url = fields.Url(schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2000),
                          metadata={"description": "the address of every service, instead of the document's servers"})
    only = OperationIdList(metadata={"type": "string", "description": "import only these operationIds "
                                                                      "(comma-separated)"})
    dry_run = fields.Boolean(load_default=False, metadata={"description": "report what would happen; store nothing"})


class ImportBodySchema(ImportOptionsSchema):
    """A body that is not itself an OpenAPI document: where the document is, and the options."""

    class Meta:
        unknown = EXCLUDE

    url = fields.String(validate=validate.Length(min=1, max=2000),
                        metadata={"description": "fetch the document from here (the host must be allowed by "
                                                 "MACHINERY_ALLOWED_HOSTS; redirects are not followed)"})
    document = fields.Dict(metadata={"description": "the OpenAPI document itself"})


class ImportedServiceSchema(Schema):
    """What became of one operation."""

    operation = fields.String(required=True, metadata={"description": "method and path: GET /pets/{id}"})
    operation_id = fields.String(allow_none=True)
    name = fields.String(allow_none=True, metadata={"description": "the service's name"})
    outcome = fields.String(required=True, validate=validate.OneOf(OUTCOMES))
    reason = fields.String(metadata={"description": "why it was skipped or refused"})
    errors = fields.Raw(metadata={"description": "the registration's details, when refused"})
    warnings = fields.List(fields.String(), metadata={"description": "what was changed or became any"})
    secrets = fields.List(fields.String(), metadata={"description": "the secrets its headers hold"})
    service_id = fields.String()
    service = fields.Dict(metadata={"description": "the service definition, as registered (or as it would be)"})


class SecretNeededSchema(Schema):
    name = fields.String(required=True)
    holds = fields.String(required=True)
    register = fields.String(required=True, metadata={"description": "how: PUT /secrets/<name>"})


class ImportReportSchema(Schema):
    """The reply of POST /services/import: each operation with its outcome."""

    title = fields.String()
    version = fields.String()
    openapi = fields.String()
    dry_run = fields.Boolean()
    counts = fields.Dict(keys=fields.String(), values=fields.Integer())
    services = fields.List(fields.Nested(ImportedServiceSchema))
    secrets = fields.List(fields.Nested(SecretNeededSchema))
