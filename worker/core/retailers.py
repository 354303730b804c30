"""The retailers file: one TOML table per retailer, validated when a process loads it."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate, validates_schema

from worker.core.brokering import DEFAULT_RULES, SORT_KEYS, Rule
from worker.core.validation import flatten_messages

RETAILER_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
CRON_FIELD = re.compile(r"^(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*$")

DEFAULT_PAYMENT_METHODS = {
    "Cash": "CASH",
    "Miscellaneous": "EXT_MISC",
    "Credit Card": "CREDIT_CARD",
    "Debit Card": "EXT_DEBIT_CARD",
    "Gift Card": "GIFT_CARD",
}
# shippingName (or shippingMethodId) -> OMS shipment method; a retailer's shipment_methods add to these
DEFAULT_SHIPMENT_METHODS = {
    "Standard": "STANDARD",
    "Ground": "STANDARD",
    "Next Day": "NEXT_DAY",
    "Second Day": "SECOND_DAY",
    "Two Day": "SECOND_DAY",
}
# who lowers stock for an in-store sale: the sale itself (order master) or the variance feed's POS_SALE records
SALES, VARIANCE_FEED = "sales", "variance_feed"


class ConfigError(ValueError):
    """The retailers file cannot be used; the message names the retailer and the key."""


@dataclass(frozen=True)
class SftpConfig:
    host: str
    port: int
    username: str
    known_hosts: str
    orders_dir: str
    archive_dir: str
    error_dir: str
    private_key: str | None = None
    password_env: str | None = None
    pattern: str = "*.json"
    min_age_seconds: float = 5.0
    # the inventory variance feed: off when variance_dir is absent
    variance_dir: str | None = None
    variance_pattern: str = "*.json"
    variance_archive_dir: str | None = None
    variance_error_dir: str | None = None
    audit_dir: str | None = None  # where the daily audit report is also written on the retailer's SFTP
    # the fulfilment feed (SHIPPED / REJECTED records, CSV or JSON): off when fulfillment_dir is absent
    fulfillment_dir: str | None = None
    fulfillment_pattern: str = "*"
    fulfillment_archive_dir: str | None = None
    fulfillment_error_dir: str | None = None


@dataclass(frozen=True)
class Retailer:
    retailer_id: str
    product_store_id: str
    currency: str
    order_master: bool
    may_split: bool
    sftp: SftpConfig
    schedule: str | None = None
    poll_seconds: float | None = None
    enabled: bool = True
    payment_methods: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PAYMENT_METHODS))
    shipment_methods: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SHIPMENT_METHODS))
    in_store_shipment_method: str = "POS_COMPLETED"
    channel: str = "POS_SALES_CHANNEL"
    brokering_rules: tuple[Rule, ...] = DEFAULT_RULES
    audit_time: str | None = None  # "HH:MM" in audit_time_zone: the daily audit of the previous day runs then
    audit_time_zone: str = "UTC"
    # SALES or VARIANCE_FEED, never both (docs/configuration.md, "In-store stock decrements")
    in_store_decrements: str = SALES

    @property
    def sales_lower_stock(self) -> bool:
        """Whether a stored in-store sale lowers the store's stock (else the variance feed's POS_SALE does)."""
        return self.order_master and self.in_store_decrements == SALES


class _Strict(Schema):
    class Meta:
        unknown = RAISE  # our own config: a typo must stop start-up, not be ignored


def _cron(value: str) -> None:
    parts = value.split()
    if len(parts) != 5 or not all(CRON_FIELD.match(p) for p in parts):
        raise ValidationError("must be a crontab of five fields, e.g. '*/5 * * * *'")


def _time_zone(value: str) -> None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not a time zone (e.g. America/New_York)") from None


class SftpSchema(_Strict):
    host = fields.String(required=True, validate=validate.Length(min=1))
    port = fields.Integer(load_default=22, validate=validate.Range(1, 65535))
    username = fields.String(required=True, validate=validate.Length(min=1))
    private_key = fields.String(load_default=None)
    password_env = fields.String(load_default=None)
    known_hosts = fields.String(required=True)
    orders_dir = fields.String(required=True, validate=validate.Regexp(r"^/", error="must be an absolute path"))
    archive_dir = fields.String(required=True, validate=validate.Regexp(r"^/", error="must be an absolute path"))
    error_dir = fields.String(required=True, validate=validate.Regexp(r"^/", error="must be an absolute path"))
    pattern = fields.String(load_default="*.json", validate=validate.Length(min=1))
    min_age_seconds = fields.Float(load_default=5.0, validate=validate.Range(min=0))
    variance_dir = fields.String(load_default=None, validate=validate.Regexp(r"^/", error="must be an absolute path"))
    variance_pattern = fields.String(load_default="*.json", validate=validate.Length(min=1))
    variance_archive_dir = fields.String(
        load_default=None, validate=validate.Regexp(r"^/", error="must be an absolute path")
    )
    variance_error_dir = fields.String(
        load_default=None, validate=validate.Regexp(r"^/", error="must be an absolute path")
    )
    audit_dir = fields.String(load_default=None, validate=validate.Regexp(r"^/", error="must be an absolute path"))
    fulfillment_dir = fields.String(
        load_default=None, validate=validate.Regexp(r"^/", error="must be an absolute path")
    )
    fulfillment_pattern = fields.String(load_default="*", validate=validate.Length(min=1))
    fulfillment_archive_dir = fields.String(
        load_default=None, validate=validate.Regexp(r"^/", error="must be an absolute path")
    )
    fulfillment_error_dir = fields.String(
        load_default=None, validate=validate.Regexp(r"^/", error="must be an absolute path")
    )

    @validates_schema
    def _auth(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("private_key") and not data.get("password_env"):
            raise ValidationError("set private_key or password_env", "private_key")
        dirs = {data["orders_dir"], data["archive_dir"], data["error_dir"]}
        if len(dirs) != 3:
            raise ValidationError("orders_dir, archive_dir and error_dir must differ", "archive_dir")
        if data.get("variance_dir"):
            for key in ("variance_archive_dir", "variance_error_dir"):
                if not data.get(key):
                    raise ValidationError("required when variance_dir is set", key)
            if len({data["variance_dir"], data["variance_archive_dir"], data["variance_error_dir"]}) != 3:
                raise ValidationError(
                    "variance_dir, variance_archive_dir and variance_error_dir must differ", "variance_archive_dir"
                )
        if data.get("fulfillment_dir"):
            for key in ("fulfillment_archive_dir", "fulfillment_error_dir"):
                if not data.get(key):
                    raise ValidationError("required when fulfillment_dir is set", key)
            trio = {data["fulfillment_dir"], data["fulfillment_archive_dir"], data["fulfillment_error_dir"]}
            if len(trio) != 3:
                raise ValidationError(
                    "fulfillment_dir, fulfillment_archive_dir and fulfillment_error_dir must differ",
                    "fulfillment_archive_dir",
                )
            others = {data["orders_dir"], data.get("variance_dir")}
            if data["fulfillment_dir"] in others:
                raise ValidationError("must differ from orders_dir and variance_dir", "fulfillment_dir")

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> SftpConfig:
        return SftpConfig(**data)


class RuleSchema(_Strict):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    facility_group = fields.String(load_default=None)
    max_distance_km = fields.Float(load_default=None, validate=validate.Range(min=0))
    safety_stock = fields.Integer(load_default=0, validate=validate.Range(min=0))
    allow_split = fields.Boolean(load_default=False)
    sort = fields.List(fields.String(validate=validate.OneOf(SORT_KEYS)), load_default=lambda: list(SORT_KEYS))

    @post_load
    def _make(self, data: dict[str, Any], **_: Any) -> Rule:
        return Rule(**{**data, "sort": tuple(data["sort"])})


class BrokeringSchema(_Strict):
    rules = fields.List(fields.Nested(RuleSchema), load_default=list)


class RetailerSchema(_Strict):
    product_store_id = fields.String(required=True, validate=validate.Length(min=1))
    currency = fields.String(required=True, validate=validate.Regexp(r"^[A-Z]{3}$", error="must be ISO 4217"))
    order_master = fields.Boolean(required=True)
    may_split = fields.Boolean(load_default=False)
    schedule = fields.String(load_default=None, validate=_cron)
    poll_seconds = fields.Float(load_default=None, validate=validate.Range(min=1))
    enabled = fields.Boolean(load_default=True)
    payment_methods = fields.Dict(keys=fields.String(), values=fields.String(), load_default=None)
    shipment_methods = fields.Dict(keys=fields.String(), values=fields.String(), load_default=None)
    in_store_decrements = fields.String(load_default=None, validate=validate.OneOf([SALES, VARIANCE_FEED]))
    in_store_shipment_method = fields.String(load_default="POS_COMPLETED")
    channel = fields.String(load_default="POS_SALES_CHANNEL")
    sftp = fields.Nested(SftpSchema, required=True)
    brokering = fields.Nested(BrokeringSchema, load_default=None)
    audit_time = fields.String(
        load_default=None, validate=validate.Regexp(r"^([01]\d|2[0-3]):[0-5]\d$", error="must be HH:MM (24 h)")
    )
    audit_time_zone = fields.String(load_default="UTC", validate=_time_zone)

    @validates_schema
    def _one_schedule(self, data: dict[str, Any], **_: Any) -> None:
        if (data.get("schedule") is None) == (data.get("poll_seconds") is None):
            raise ValidationError("set exactly one of schedule (crontab) or poll_seconds", "schedule")


def parse_retailers(document: dict[str, Any], source: str = "retailers file") -> dict[str, Retailer]:
    """Validate a parsed retailers document; errors name the retailer and the key."""
    unknown = set(document) - {"retailers"}
    if unknown:
        raise ConfigError(f"{source}: unknown top-level key(s) {sorted(unknown)}; expected [retailers.<id>]")
    tables = document.get("retailers")
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{source}: no [retailers.<id>] table")
    retailers = {}
    for retailer_id, table in tables.items():
        if not RETAILER_ID.match(retailer_id):
            raise ConfigError(f"{source}: retailer id {retailer_id!r} must match {RETAILER_ID.pattern}")
        try:
            data = RetailerSchema().load(table)
        except ValidationError as exc:
            raise ConfigError(f"{source}: retailer {retailer_id!r}: {flatten_messages(exc.messages)}") from None
        methods = dict(DEFAULT_PAYMENT_METHODS)
        methods.update(data.pop("payment_methods") or {})
        shipping = dict(DEFAULT_SHIPMENT_METHODS)
        shipping.update(data.pop("shipment_methods") or {})
        data["in_store_decrements"] = in_store_decrements(retailer_id, data, source)
        rules = tuple((data.pop("brokering") or {}).get("rules") or ()) or DEFAULT_RULES
        retailers[retailer_id] = Retailer(
            retailer_id=retailer_id, payment_methods=methods, shipment_methods=shipping, brokering_rules=rules, **data
        )
    return retailers


def in_store_decrements(retailer_id: str, data: dict[str, Any], source: str) -> str:
    """Who lowers stock for in-store sales: the sales (order_master) or the variance feed's POS_SALE records,
    never both. An order master with a variance feed must say which; a choice the file contradicts stops
    start-up naming the retailer and the keys."""
    chosen, master, feed = data.get("in_store_decrements"), data["order_master"], data["sftp"].variance_dir
    where = f"{source}: retailer {retailer_id!r}"
    if chosen is None:
        if master and feed:
            raise ConfigError(
                f"{where}: order_master = true and sftp.variance_dir are both set, so in-store sales and the"
                ' variance feed\'s POS_SALE records would both lower stock; set in_store_decrements = "sales"'
                ' (POS_SALE records of the feed are then ignored) or "variance_feed"'
            )
        return SALES if master else VARIANCE_FEED
    if chosen == SALES and not master:
        raise ConfigError(
            f'{where}: in_store_decrements = "sales" contradicts order_master = false (in-store sales are'
            " not stored, so they cannot lower stock)"
        )
    if chosen == VARIANCE_FEED and not feed:
        raise ConfigError(
            f'{where}: in_store_decrements = "variance_feed" needs sftp.variance_dir (no variance feed is'
            " configured, so nothing would lower stock for in-store sales)"
        )
    return str(chosen)


def parse_retailers_text(text: str, source: str = "retailers file") -> dict[str, Retailer]:
    """Parse and validate the text of a retailers file; errors name the source, the retailer and the key."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"retailers file {source}: not valid TOML: {exc}") from None
    return parse_retailers(document, source)


def decode_retailers_file(data: bytes, source: str) -> str:
    """The bytes of a retailers file as text (TOML is UTF-8); ConfigError names the offset otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        where = f"byte 0x{data[exc.start]:02x} at offset {exc.start}"
        raise ConfigError(f"retailers file {source}: not UTF-8: {where}") from None


def load_retailers(path: Path) -> dict[str, Retailer]:
    """Read and validate the retailers TOML file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"retailers file {path} not found (set TLOGSYNC_RETAILERS)") from None
    return parse_retailers_text(decode_retailers_file(data, str(path)), str(path))
