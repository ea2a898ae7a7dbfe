"""The shapes of secrets and personal data: vendor token formats, keys written in assignments
and prose, card numbers, IBANs, e-mail addresses, IP addresses and phone numbers.

`candidates(text)` yields every match of every detector; `redact.find_sensitive` chooses
among overlapping ones and applies the documentation exemption.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from phonenumbers import Leniency, PhoneNumberMatcher
from stdnum import iban, luhn

PLACEHOLDERS = {
    "email": "[email]",
    "phone": "[phone]",
    "ip": "[ip]",
    "secret": "[secret]",
    "card": "[card]",
    "iban": "[iban]",
    "handle": "[handle]",
}


@dataclass(frozen=True)
class Finding:
    """A piece of sensitive text: its kind (a key of PLACEHOLDERS), span and what it looks like."""

    kind: str
    start: int
    end: int
    label: str

    @property
    def placeholder(self) -> str:
        return PLACEHOLDERS[self.kind]


@dataclass(frozen=True)
class _Detector:
    kind: str
    label: str
    pattern: re.Pattern[str]
    group: int | str = 0
    keep: Callable[[str], bool] | None = None
    # A context that, found right before a match, says it is something else.
    not_after: re.Pattern[str] | None = None


# ---------------------------------------------------------------- validators


def _mixed(value: str) -> bool:
    """Real keys mix upper case, lower case and digits; prose and slugs like 'sk-learn' do not."""
    return (
        any(c.isdigit() for c in value)
        and any(c.isupper() for c in value)
        and any(c.islower() for c in value)
    )


def _not_filler(value: str) -> bool:
    """Filler like ghp_xxxx... is no key: a real one has at least six distinct characters."""
    body = re.sub(r"^[a-z]+[_-]", "", value, flags=re.IGNORECASE)
    return len(set(body)) >= 6


def _real_email(value: str) -> bool:
    # git@github.com:org/repo.git is an SSH remote, not a person.
    return value.rpartition("@")[0].lower() != "git"


def _real_ip(value: str) -> bool:
    """Loopback and 'any' identify no machine, nor does a network (10.0.0.0/8); a host with its
    prefix length (10.0.4.17/24) does."""
    try:
        interface = ipaddress.ip_interface(value)
    except ValueError:
        return False
    address = interface.ip
    if address.is_loopback or address.is_unspecified:
        return False
    network = interface.network
    return network.num_addresses == 1 or address != network.network_address


def _real_ipv6(value: str) -> bool:
    return value.count(":") >= 2 and _real_ip(value)


def _card_number(value: str) -> bool:
    """Card numbers pass the Luhn check and start with an issuer's digit (2 Mir and Mastercard,
    3 Amex, JCB and Diners, 4 Visa, 5 and 6 Mastercard, Maestro, Discover and UnionPay).
    Ids, timestamps and snowflakes of the same length mostly start with 1."""
    digits = re.sub(r"\D", "", value)
    return 13 <= len(digits) <= 19 and digits[0] in "23456" and luhn.is_valid(digits)


def _iban(value: str) -> bool:
    # The country's length and layout and the ISO 7064 mod-97 check. A number that fails only
    # its bank's own national check digit is still someone's account, mistyped.
    return iban.is_valid(value.upper().replace("-", ""), check_country=False)


_PLACEHOLDER_WORDS = {
    "true", "false", "null", "none", "nil", "yes", "no", "on", "off", "required", "optional",
    "string", "str", "int", "secret", "password", "token", "redacted", "changeme", "hidden",
    "undefined", "empty", "env", "value",
}  # fmt: skip


# `token = os.environ.get`, `api_key: settings.key`, `password=os.environ['X']` and
# `secret = getpass(` are code, not values.
_CODE_REFERENCE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?:\.[A-Za-z_]\w*|[(\[].*)")


def _real_value(value: str) -> bool:
    """A value after `password=` that is not an obvious placeholder or reference."""
    clean = value.strip().strip("\"'")
    lowered = clean.lower()
    if len(clean) < 4 or lowered in _PLACEHOLDER_WORDS or len(set(clean)) <= 2:
        return False
    if re.search(r"(.)\1{7}", clean):  # AKIAxxxxxxxxxxxxxxxx, ********: filler
        return False
    if clean[0] in "$%<{[(*#/~." or clean.startswith(("http://", "https://")):
        return False
    if any(word in lowered for word in ("your", "placeholder", "dummy", "<", "...")):
        return False
    return _CODE_REFERENCE.fullmatch(clean) is None


def _looks_secret(value: str) -> bool:
    """Unquoted values after `key:` are often prose ('token: expired'); want a digit or symbol."""
    return _real_value(value) and len(value) >= 6 and bool(re.search(r"[\d_+/=!@#%^&*-]", value))


# ---------------------------------------------------------------- detectors

_B = r"(?<![\w-])"  # not glued to the end of a longer token
_E = r"(?![\w-])"  # nor to the start of one
_KEY_WORDS = (
    r"password|passwd|pwd|passphrase|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|private[_-]?key|client[_-]?secret|auth[_-]?key|credentials?"
)


def _token(label: str, pattern: str, keep: Callable[[str], bool] = _not_filler) -> _Detector:
    """A secret known by its vendor's prefix and shape, not glued to a longer token."""
    return _Detector("secret", label, re.compile(_B + f"(?:{pattern})" + _E), keep=keep)


# Formats from the public secret-scanning rule sets (gitleaks, GitHub secret scanning), each as
# its vendor documents it. A filler value (ghp_xxxx...) is no key anywhere.
_VENDOR_TOKENS = (
    _token("a GitHub token", r"gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}"),
    _token("a GitLab token", r"gl(?:pat|rt|dt|ptt|ft|cbt|oas|soat)-[\w-]{20,}"),
    _token("a Google API key", r"AIza[0-9A-Za-z_-]{35}"),
    _token("a Google OAuth token", r"ya29\.[\w-]{20,}|GOCSPX-[\w-]{24,}"),
    _token("a Slack token", r"xox[abposre]-[A-Za-z0-9-]{10,}|xapp-\d-[A-Za-z0-9-]{10,}"),
    _token(
        "an API key (sk-)",
        r"sk-(?:proj-|svcacct-|admin-|ant-)?[A-Za-z0-9_-]{20,}",
        keep=lambda value: _mixed(value) and _not_filler(value),
    ),
    _token("a Stripe key", r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}|whsec_[A-Za-z0-9]{24,}"),
    _token(
        "a package registry token",
        r"npm_[A-Za-z0-9]{36}|pypi-AgE[A-Za-z0-9_-]{50,}|dckr_pat_[\w-]{24,}",
    ),
    _token("a Hugging Face token", r"hf_[A-Za-z0-9]{30,40}|api_org_[A-Za-z0-9]{30,40}"),
    _token("a SendGrid key", r"SG\.[\w-]{20,24}\.[\w-]{40,46}"),
    _token("a Twilio key", r"(?:AC|SK)[0-9a-f]{32}"),
    _token("a DigitalOcean token", r"do[opr]_v1_[0-9a-f]{64}"),
    _token("a Mailgun key", r"key-[0-9a-f]{32}"),
    _token("a Mailchimp key", r"[0-9a-f]{32}-us\d{1,2}"),
    _token("a Discord token", r"[MNO][\w-]{23,27}\.[\w-]{6}\.[\w-]{27,40}", keep=_mixed),
    _token("a Shopify token", r"shp(?:at|ca|pa|ss)_[0-9a-fA-F]{32}"),
    _token("a Postman key", r"PMAK-[0-9a-f]{24}-[0-9a-f]{34}"),
    _token("a Linear key", r"lin_api_[A-Za-z0-9]{40}"),
    _token("a HashiCorp token", r"hv[sb]\.[\w-]{24,}|[a-z0-9]{14}\.atlasv1\.[\w-]{60,70}"),
    _token("a Databricks token", r"dapi[0-9a-f]{32}(?:-\d)?"),
    _token("a Grafana token", r"glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[0-9a-f]{8}"),
    _token("a New Relic key", r"NR(?:AK|II|JS)-[A-Z0-9]{27}"),
    _token("a Sentry token", r"sntry[su]_[\w+/=-]{40,}"),
    _token("an age secret key", r"AGE-SECRET-KEY-1[0-9A-Z]{58}"),
    _token("a Doppler token", r"dp\.(?:pt|st|sa|ct|scim|audit)\.[A-Za-z0-9]{40,44}"),
    _token("a Pulumi token", r"pul-[0-9a-f]{40}"),
    _token("a Square token", r"EAAA[\w-]{60}|sq0(?:atp|csp)-[\w-]{22,43}"),
    _token("an Alibaba key", r"LTAI[A-Za-z0-9]{20}"),
    _token("an Atlassian token", r"ATATT3[\w=-]{150,}"),
    _token("a Heroku key", r"HRKU-[\w-]{58,}"),
    _token(
        "a webhook URL",
        r"https://hooks\.slack\.com/services/[\w/-]+"
        r"|https://(?:ptb\.|canary\.)?discord(?:app)?\.com/api/webhooks/\d+/[\w-]+",
    ),
)


_AWS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}(?![A-Za-z0-9])")
_AWS_SECRET_SHAPE = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+=])")
_AWS_PAIR_REACH = 200  # characters either side of a key id


def _aws_secrets_beside_ids(text: str) -> Iterable[Finding]:
    """A secret key pasted next to its key id, often without the word 'secret' (`AKIA... /
    wJalr...`): 40 characters of mixed base64 near an id are taken for its key."""
    for key_id in _AWS_KEY_ID.finditer(text):
        start = max(0, key_id.start() - _AWS_PAIR_REACH)
        for match in _AWS_SECRET_SHAPE.finditer(text, start):
            if match.start() > key_id.end() + _AWS_PAIR_REACH:
                break
            if _mixed(match.group()):
                yield Finding("secret", match.start(), match.end(), "an AWS secret key")


def _encoded_credentials(value: str) -> bool:
    """Base64 of `user:password`, as in HTTP Basic auth and Docker's config.json."""
    try:
        decoded = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False
    return ":" in decoded and decoded.isprintable()


# Each grouping is a pattern of its own, so a CVV written after a number cannot hide it.
_CARD_GROUPINGS = (
    r"\d{4}([ -])\d{4}\1\d{4}\1\d{4}\1\d{3}",  # 19 digits
    r"\d{4}([ -])\d{4}\1\d{4}\1\d{4}",  # 16
    r"\d{4}([ -])\d{6}\1\d{4,5}",  # 14 and 15 (Diners, Amex)
    r"\d{13,19}",
)
_CARDS = tuple(
    _Detector(
        "card",
        "a payment card number",
        re.compile(r"(?<![\w.,+-])" + grouping + r"(?![\w-]|[.,]\d)"),
        keep=_card_number,
    )
    for grouping in _CARD_GROUPINGS
)

# Unicode letters count (jürgen@müller.de, user@пример.рф). Plain labels: nested optional
# parts here backtrack badly on long dotted text.
_EMAIL_LOCAL = r"(?<![\w.+-])\w[\w.%+-]{0,63}"
_EMAIL_LABEL = r"[^\W_][\w-]{0,62}"
_EMAIL_TLD = r"(?:[^\W\d_]{2,24}|xn--[a-z0-9-]{2,59})"
# Written out to dodge harvesters: name [at] host [dot] io, name (at) host (dot) com.
_BRACKETED_AT = r"\s*(?:\[(?:at|@)\]|\((?:at|@)\)|\{at\}|<at>)\s*"
_BRACKETED_DOT = r"\s*(?:\[(?:dot|\.)\]|\((?:dot|\.)\)|\{dot\}|<dot>)\s*"

_DETECTORS: tuple[_Detector, ...] = (
    _Detector(
        "secret",
        "a private key",
        re.compile(
            r"-----BEGIN[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?"
            r"(?:-----END[A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----|\Z)"
        ),
    ),
    *_VENDOR_TOKENS,
    _Detector(
        "secret",
        "an AWS access key id",
        _AWS_KEY_ID,
        keep=_not_filler,
    ),
    _Detector(
        "secret",
        "an AWS secret key",
        re.compile(
            r"(?i)aws_?secret_?(?:access_?)?key[\"']?\s*[:=]\s*[\"']?"
            r"(?P<value>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"
        ),
        group="value",
        keep=_not_filler,
    ),
    _Detector(
        "secret",
        "an Azure key",
        re.compile(
            r"(?i)\b(?:AccountKey|SharedAccessKey|sig)=(?P<value>[A-Za-z0-9+/%]{20,}={0,2})"
        ),
        group="value",
        keep=_mixed,
    ),
    _Detector(
        "secret",
        "a Telegram bot token",
        # Also inside Bot API URLs: https://api.telegram.org/bot<token>/getMe. Early bots
        # have ids of five digits.
        re.compile(r"(?:(?<=/bot)|(?<![\w:]))\d{5,12}:[A-Za-z0-9_-]{35}" + _E),
        keep=_not_filler,
    ),
    _Detector(
        "secret",
        "a JSON web token",
        re.compile(_B + r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*" + _E),
    ),
    _Detector(
        "secret",
        "credentials in a URL",
        # user:password@ and, as Redis writes it, :password@
        re.compile(
            r"(?i)\b[a-z][a-z0-9+.-]{1,15}://"
            r"(?P<value>[^\s/?#@:\[\]]+(?::[^\s/?#@]*)?|:[^\s/?#@]+)@"
            r"(?=[A-Za-z0-9\[])"
        ),
        group="value",
        keep=lambda value: value.lower() not in ("git", "anonymous"),
    ),
    _Detector(
        "secret",
        "a bearer token",
        re.compile(r"(?i)\bbearer\s+(?P<value>[A-Za-z0-9._~+/-]{16,}=*)"),
        group="value",
        keep=_real_value,
    ),
    _Detector(
        "secret",
        "encoded credentials",
        re.compile(
            r"(?i)(?:\bbasic\s+|\"auth\"\s*:\s*\")(?P<value>[A-Za-z0-9+/]{8,}={0,2})(?![\w+/=])"
        ),
        group="value",
        keep=_encoded_credentials,
    ),
    # Credentials on a command line: `curl -u user:pw`, `--password pw`, `mysql -ppw`.
    _Detector(
        "secret",
        "a password on a command line",
        re.compile(r"(?<![\w-])(?:-u|--user)[ =][\"']?(?P<value>[^\s:\"']+:[^\s\"']+)"),
        group="value",
        keep=lambda value: _real_value(value.partition(":")[2]),
    ),
    _Detector(
        "secret",
        "a password on a command line",
        re.compile(
            r"(?<![\w-])--(?:password|passwd|pass|token|api-key|secret)[ =][\"']?"
            r"(?P<value>[^\s\"']+)"
        ),
        group="value",
        keep=_real_value,
    ),
    _Detector(
        "secret",
        "a password on a command line",
        re.compile(r"\b(?:mysql|mysqldump|mariadb|mysqladmin)\b[^\n]*?\s-p(?P<value>[^\s\"']{4,})"),
        group="value",
        keep=_real_value,
    ),
    *_CARDS,
    _Detector(
        "iban",
        "an IBAN",
        re.compile(
            r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]{4}){2,7}"
            r"(?:[ -]?[A-Za-z0-9]{1,4})?(?![A-Za-z0-9])"
        ),
        keep=_iban,
    ),
    _Detector(
        "email",
        "an e-mail address",
        re.compile(_EMAIL_LOCAL + "@" + rf"(?:{_EMAIL_LABEL}\.)+{_EMAIL_TLD}(?![\w-])"),
        keep=_real_email,
    ),
    _Detector(
        "email",
        "an e-mail address",
        re.compile(
            rf"(?i){_EMAIL_LOCAL}{_BRACKETED_AT}"
            rf"(?:{_EMAIL_LABEL}(?:{_BRACKETED_DOT}|\s+dot\s+|\.))+{_EMAIL_TLD}(?![\w-])"
        ),
    ),
    _Detector(
        "email",
        "an e-mail address",
        # 'tomas at fastmail dot com': plain words are prose too often ('look at this dot
        # product'), so only with a common top-level domain.
        re.compile(
            rf"(?i){_EMAIL_LOCAL}\s+at\s+(?:{_EMAIL_LABEL}(?:{_BRACKETED_DOT}|\s+dot\s+))+"
            r"(?:com|org|net|edu|gov|io|dev|app|ai|co|me|info|eu|uk|us|ca|au|de|at|ch|fr|es"
            r"|it|nl|be|se|no|dk|fi|pl|cz|ua|ru|in|jp|cn|br)(?![\w-])"
        ),
    ),
    _Detector(
        "ip",
        "an IP address",
        re.compile(
            r"(?<![\w.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}"
            r"(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:/\d{1,2})?(?![\w]|\.\d)"
        ),
        keep=_real_ip,
        # `version 3.12.1.0`, `v3.12.1.0`, `kestrel==3.12.1.0`, `kestrel-3.12.1.0.tar.gz`
        not_after=re.compile(r"(?i)(?:\bv|\bversion|\bver\.?|\brelease|[=<>~^]|\w-)\s*$"),
    ),
    _Detector(
        "ip",
        "an IP address",
        re.compile(r"(?<![\w:.])[0-9A-Fa-f:]{2,39}(?:/\d{1,3})?(?![\w:])"),
        keep=_real_ipv6,
    ),
)


# `password=...`, `api_key: "..."`, `"token" => '...'`: the value goes, the key stays.
_ASSIGNMENT = re.compile(
    rf"(?i)(?<![\w-])[\w.-]{{0,40}}?(?:{_KEY_WORDS})[\w.-]{{0,40}}"
    r"[\"']?[ \t]*(?P<sep>=>|:=|=|:)[ \t]*"
    r"(?:\"(?P<dq>[^\"\n]+)\"|'(?P<sq>[^'\n]+)'|(?P<bare>[^\s\"'`,;)}\]]+))"
)


# "my password is hunter2x", "pw: ...", "Passwort ist ...": the value goes, the words stay.
_PASSWORD_IN_PROSE = re.compile(
    r"(?i)(?<![\w-])(?:password|passwort|passwd|passphrase|passcode|kennwort|pass|pwd|pw"
    r"|пароль|contraseña|mot de passe|senha|hasło)"
    r"(?:\s+(?:is now|is|was|ist|war|est|es|é|это)\b|[ \t]*(?P<sep>->|[:=]))[ \t]*"
    r"(?:\"(?P<dq>[^\"\n]+)\"|'(?P<sq>[^'\n]+)'|(?P<bare>[^\s\"'`,;)}\]]+))"
)


def _assignments(text: str) -> Iterable[Finding]:
    for pattern, label in (
        (_ASSIGNMENT, "a password or key assignment"),
        (_PASSWORD_IN_PROSE, "a password"),
    ):
        for match in pattern.finditer(text):
            name = next(g for g in ("dq", "sq", "bare") if match.group(g) is not None)
            start, end = match.span(name)
            value = match.group(name)
            if name == "bare":  # a sentence's full stop is not part of the password
                trimmed = value.rstrip(".,!?:")
                end -= len(value) - len(trimmed)
                value = trimmed
            prose_like = name == "bare" and match.group("sep") in (":", None)
            if (_looks_secret(value) if prose_like else _real_value(value)) and end > start:
                yield Finding("secret", start, end, label)


# Numbers written with + (or 00) are found in any country's format; national formats only for
# these regions, where a number must also be valid, not just of a possible length. More
# regions cost a scan each and start to take ids for numbers (measured in the corpus).
_PHONE_REGIONS = ("US", "GB", "DE", "FR", "RU")
# A number glued to a word, path, URL or option (issuecomment-2256055975) is an id.
_GLUED_BEFORE = re.compile(r"[\w+/.:=#-]")
_GLUED_AFTER = re.compile(r"[\w/]|[.:/-]\d")
# Seven digits close together, which every phone number has: text without them (most chat
# messages) skips the six scans.
_PHONE_HINT = re.compile(r"\d(?:\D{0,4}\d){6}")


def _phones(text: str) -> Iterable[Finding]:
    if _PHONE_HINT.search(text) is None:
        return
    scans = [(None, Leniency.POSSIBLE)] + [(region, Leniency.VALID) for region in _PHONE_REGIONS]
    for region, leniency in scans:
        for match in PhoneNumberMatcher(text, region, leniency=leniency):
            raw = match.raw_string
            if sum(char.isdigit() for char in raw) < 7:
                continue
            glued = _GLUED_BEFORE.match(text, match.start - 1) if match.start else None
            glued = glued or _GLUED_AFTER.match(text, match.end)
            if raw.startswith("+") or not glued:
                yield Finding("phone", match.start, match.end, "a phone number")


def candidates(text: str) -> Iterable[Finding]:
    """Every detector's findings in `text`, overlapping ones included."""
    for detector in _DETECTORS:
        for match in detector.pattern.finditer(text):
            value = match.group(detector.group)
            if detector.keep is not None and not detector.keep(value):
                continue
            start, end = match.span(detector.group)
            after = detector.not_after
            if after is not None and after.search(text, max(0, start - 12), start):
                continue
            yield Finding(detector.kind, start, end, detector.label)
    yield from _aws_secrets_beside_ids(text)
    yield from _assignments(text)
    yield from _phones(text)
