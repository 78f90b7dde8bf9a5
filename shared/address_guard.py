"""The SSRF guard for user-given URLs: webhook URLs, and the output URLs a provider
answers (the WaveSpeed client downloads through it).

editq POSTs job events to a URL the user chose, from inside our network. Without
a guard that URL could point at the cloud metadata service, Redis, the database
or anything else only reachable from here (server-side request forgery). So a
webhook URL must be plain http(s), carry no credentials, and every address its
host stands for must be public.

The guard runs twice: when the job is submitted (a clear 422 early) and again
just before each delivery, because DNS answers change. The deliverer then
connects to one of the addresses checked here (`pinned_request`), not to
whatever the name resolves to a millisecond later: that closes DNS rebinding.

Literal hosts are parsed here, in every spelling `inet_aton` accepts
(`2130706433`, `0177.0.0.1`, `0x7f.1`, ...), rather than trusting that the
resolver turns them into the address they mean: an injected or different
resolver might not, and the HTTP client's own connect would.

(Over 400 lines: parsing every spelling of an address, judging it, resolving with a
deadline and pinning the connection are one defence, and each part is only safe
together with the others.)
"""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit, urlunsplit

from shared.errors import InvalidInput

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

MAX_URL_LENGTH = 2048
_DEFAULT_PORTS = {"http": 80, "https": 443}

# Cloud metadata endpoints (AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba):
# named on their own because they are the classic SSRF prize.
_METADATA = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200"))

_V4 = ipaddress.IPv4Network
_V4_THIS_NETWORK = _V4("0.0.0.0/8")
_V4_SHARED = _V4("100.64.0.0/10")
_V4_PRIVATE = (_V4("10.0.0.0/8"), _V4("172.16.0.0/12"), _V4("192.168.0.0/16"))
_V4_BENCHMARKING = _V4("198.18.0.0/15")
_V4_BROADCAST = ipaddress.IPv4Address("255.255.255.255")

_V6 = ipaddress.IPv6Network
_V6_COMPATIBLE = _V6("::/96")
_V6_NAT64 = _V6("64:ff9b::/96")
_V6_UNIQUE_LOCAL = _V6("fc00::/7")

# Characters of a host name once IDNA has made it ASCII: labels of letters,
# digits, '-' and '_' joined by single dots. Anything else (spaces, '%', '\')
# is where URL parsers disagree with each other, so it is refused outright.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")
# The last label is a number: WHATWG URL parsers treat such a host as IPv4, and
# no top-level domain is numeric, so one that is not a valid address is refused.
_NUMERIC_LABEL = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)")
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_SCHEME_SHOWN = re.compile(r"[a-z][a-z0-9+.-]{0,19}")


class UnsafeWebhookUrl(InvalidInput):
    """A webhook URL editq will not call: wrong scheme, credentials, or a non-public address.

    The message names what was refused and why, never the URL's credentials.
    """

    code = "webhook_url_not_allowed"
    title = "Webhook URL not allowed"

    def __init__(self, message: str, **extra: object) -> None:
        extra.setdefault("field", "webhook_url")
        super().__init__(message, **extra)


def check_webhook_url(url: str, allowed_hosts: frozenset[str] | set[str] = frozenset(),
                      resolve: Resolver | None = None) -> list[str]:
    """Refuse `url` unless it is http(s) to public addresses only; return those addresses.

    `allowed_hosts` (EDITQ_WEBHOOK_ALLOWED_HOSTS: exact names or literal IPs, for
    local development and tests) skips the address checks: such a URL is
    accepted as is and `[]` is returned, meaning "connect to the URL itself".

    Otherwise the host is resolved (`resolve(host, port)`, by default
    `socket.getaddrinfo`) and EVERY address must be public: one private answer
    among public ones is enough for a rebinding attacker. The addresses are
    returned so that the deliverer connects to one of them (`pinned_request`).
    """
    _, host, port, literal = parse_url(url)
    if _allowed(host, literal, allowed_hosts):
        return []
    if literal is not None:
        # A literal needs no resolver: the address is the one written.
        shown = "" if host == str(literal) else f"host {host!r} means "
        _check_address(literal, f"{shown}{literal}")
        return [str(literal)]
    addresses = _resolve(host, port, resolve or _getaddrinfo)
    for address in addresses:
        _check_address(address, f"host {host!r} resolves to {address}")
    return [str(a) for a in addresses]


def pinned_request(url: str, ip: str) -> tuple[str, dict[str, str], dict[str, object]]:
    """`url` rewritten to connect to `ip`, with the headers and httpx extensions to send.

    The connection goes to the address the guard checked, while the `Host`
    header (and, for https, the TLS server name via httpx's `sni_hostname`
    extension, so the certificate is still verified against it) stays the
    original host.
    """
    scheme, host, port, literal = parse_url(url)
    address = ipaddress.ip_address(ip)
    netloc = f"[{address}]" if address.version == 6 else str(address)
    host_header = f"[{host}]" if isinstance(literal, ipaddress.IPv6Address) else host
    if port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
        host_header += f":{port}"
    parts = urlsplit(url)
    pinned = urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
    extensions: dict[str, object] = {"sni_hostname": host} if scheme == "https" else {}
    return pinned, {"Host": host_header}, extensions


# -- parsing ---------------------------------------------------------------------------


def parse_url(url: str) -> tuple[str, str, int, IPAddress | None]:
    """Scheme, normalised host, port and (for a literal host) its address, or a refusal."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeWebhookUrl(
            f"webhook_url refused: it is {len(url)} characters long, over {MAX_URL_LENGTH}",
            reason="length")
    if _UNSAFE_CHARS.search(url):
        raise UnsafeWebhookUrl(
            "webhook_url refused: it contains whitespace, control characters or a backslash",
            reason="characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise UnsafeWebhookUrl(f"webhook_url refused: not a valid URL ({exc})",
                               reason="syntax") from None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise UnsafeWebhookUrl(_scheme_message(url, scheme), reason="scheme")
    netloc = parts.netloc
    if "@" in netloc:
        # Never echo the netloc: it holds the credentials.
        raise UnsafeWebhookUrl(
            "webhook_url refused: it must not contain credentials (user:password@); "
            "authenticate with the signature headers instead", reason="userinfo")
    if not netloc:
        raise UnsafeWebhookUrl("webhook_url refused: the URL has no host", reason="host")
    host, port_text = _split_netloc(netloc)
    port = _port(port_text, _DEFAULT_PORTS[scheme])
    host, literal = _host(host, bracketed=netloc.startswith("["))
    return scheme, host, port, literal


def _scheme_message(url: str, scheme: str) -> str:
    # Name the scheme only when it is certainly one: in `user:pw@host` the
    # "scheme" urlsplit sees is the user name.
    if scheme and (url[len(scheme) + 1:].startswith("//") or scheme in (
            "javascript", "data", "file", "mailto", "about", "blob", "vbscript")) \
            and _SCHEME_SHOWN.fullmatch(scheme):
        return f"webhook_url refused: scheme {scheme!r} is not allowed; use http or https"
    return "webhook_url refused: it needs an http:// or https:// scheme"


def _split_netloc(netloc: str) -> tuple[str, str | None]:
    """`host` and the text after its ':' (None when there is no ':')."""
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise UnsafeWebhookUrl("webhook_url refused: unclosed '[' in the host",
                                   reason="host")
        host, rest = netloc[:end + 1], netloc[end + 1:]
        if rest and not rest.startswith(":"):
            raise UnsafeWebhookUrl("webhook_url refused: text after the ']' of the host",
                                   reason="host")
        return host, rest[1:] if rest else None
    host, colon, port_text = netloc.partition(":")
    if ":" in port_text:
        raise UnsafeWebhookUrl(
            "webhook_url refused: an IPv6 address must be written in brackets ([::1])",
            reason="host")
    return host, port_text if colon else None


def _port(text: str | None, default: int) -> int:
    if not text:  # absent, or 'host:' with an empty port: the scheme's default
        return default
    if not (text.isascii() and text.isdigit()):
        raise UnsafeWebhookUrl(f"webhook_url refused: port {text[:20]!r} is not a number",
                               reason="port")
    port = int(text)
    if not 1 <= port <= 65535:
        raise UnsafeWebhookUrl(f"webhook_url refused: port {port} is outside 1-65535",
                               reason="port")
    return port


def _host(raw: str, *, bracketed: bool) -> tuple[str, IPAddress | None]:
    """The host lower-cased, ASCII and without a trailing dot, and its address if literal."""
    if bracketed:
        inner = raw[1:-1]
        if "%" in inner:
            raise UnsafeWebhookUrl("webhook_url refused: IPv6 zone identifiers are not allowed",
                                   reason="host")
        try:
            address = ipaddress.IPv6Address(inner)
        except ValueError:
            raise UnsafeWebhookUrl(f"webhook_url refused: {raw[:100]!r} is not a valid IPv6 "
                                   "address", reason="host") from None
        return str(address), address
    host = raw
    if not host.isascii():
        # What socket.getaddrinfo would do with it too: IDNA, which also maps
        # full-width digits and ideographic dots (U+FF11.. and U+3002) to ASCII.
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise UnsafeWebhookUrl("webhook_url refused: the host is not a valid "
                                   "internationalised domain name", reason="host") from None
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host:
        raise UnsafeWebhookUrl("webhook_url refused: the URL has no host", reason="host")
    if not _HOST_NAME.fullmatch(host):
        raise UnsafeWebhookUrl(f"webhook_url refused: host {host[:100]!r} contains characters "
                               "not allowed in a host name", reason="host")
    v4 = parse_ipv4_literal(host)
    if v4 is None and _NUMERIC_LABEL.fullmatch(host.rsplit(".", 1)[-1]):
        raise UnsafeWebhookUrl(f"webhook_url refused: host {host[:100]!r} is neither a valid "
                               "IPv4 address nor a domain name", reason="host")
    return host, v4


def parse_ipv4_literal(text: str) -> ipaddress.IPv4Address | None:
    """`text` read the way `inet_aton` reads it, or None when it is not an IPv4 literal.

    1 to 4 dot-separated parts, each decimal, 0x-hex or 0-octal; the last part
    fills the remaining bytes: `127.1` is 127.0.0.1, `2130706433` too.
    """
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        value = _ipv4_part(part)
        if value is None:
            return None
        values.append(value)
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        return None
    number = 0
    for v in head:
        number = number * 256 + v
    return ipaddress.IPv4Address(number * 256 ** (4 - len(head)) + last)


def _ipv4_part(part: str) -> int | None:
    part = part.lower()
    if part.startswith("0x"):
        digits = part[2:]
        if not digits:  # inet_aton reads a bare "0x" as 0
            return 0
        return int(digits, 16) if all(c in "0123456789abcdef" for c in digits) else None
    if not part or not all(c in "0123456789" for c in part):
        return None
    if len(part) > 1 and part.startswith("0"):
        return int(part, 8) if all(c in "01234567" for c in part) else None
    return int(part)


def _allowed(host: str, literal: IPAddress | None,
             allowed_hosts: frozenset[str] | set[str]) -> bool:
    if not allowed_hosts:
        return False
    allowed = {_allowed_key(h) for h in allowed_hosts}
    return host in allowed or (literal is not None and str(literal) in allowed)


def _allowed_key(entry: str) -> str:
    """An allow-list entry as hosts are compared: lower case, no dot, IPs canonical."""
    key = entry.strip().lower().rstrip(".")
    try:
        return str(ipaddress.ip_address(key.strip("[]")))
    except ValueError:
        return key



def is_loopback_host(host: str | None) -> bool:
    """True for localhost and any loopback address (127.0.0.0/8, ::1): where plain http
    is acceptable for a provider's base URL (the settings check it)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False

# -- resolving and judging addresses --------------------------------------------------


# getaddrinfo has no timeout of its own: a hanging resolver would hold the API's or a
# worker's thread for as long as it hangs. Lookups run here and are given up after
# RESOLVE_TIMEOUT_SECONDS (the name then "does not resolve": refused at submit,
# retried later at delivery); a few stuck lookups hold these threads, not the caller's.
RESOLVE_TIMEOUT_SECONDS = 5.0
_resolver: list[ThreadPoolExecutor] = []  # made at the first lookup, not at import
_resolver_lock = threading.Lock()


def _resolver_threads() -> ThreadPoolExecutor:
    with _resolver_lock:
        if not _resolver:
            _resolver.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="webhook-dns"))
        return _resolver[0]


def _getaddrinfo(host: str, port: int) -> list[str]:
    """The default resolver: the system's, as the HTTP client would use it."""
    lookup = _resolver_threads().submit(socket.getaddrinfo, host, port,
                                        type=socket.SOCK_STREAM)
    try:
        infos = lookup.result(timeout=RESOLVE_TIMEOUT_SECONDS)
    except FutureTimeout:
        lookup.cancel()
        raise OSError(f"resolving {host!r} took more than {RESOLVE_TIMEOUT_SECONDS:g} s") \
            from None
    return [str(info[4][0]) for info in infos
            if info[0] in (socket.AF_INET, socket.AF_INET6)]


def _resolve(host: str, port: int, resolve: Resolver) -> list[IPAddress]:
    try:
        answers = resolve(host, port)
    except (OSError, UnicodeError):
        raise UnsafeWebhookUrl(f"webhook_url refused: host {host!r} does not resolve",
                               reason="unresolvable") from None
    addresses: list[IPAddress] = []
    for answer in answers:
        try:
            address = ipaddress.ip_address(answer)
        except ValueError:
            raise UnsafeWebhookUrl(f"webhook_url refused: host {host!r} resolved to "
                                   f"{answer!r}, which is not an IP address",
                                   reason="unresolvable") from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnsafeWebhookUrl(f"webhook_url refused: host {host!r} resolves to no address",
                               reason="unresolvable")
    return addresses


def _check_address(address: IPAddress, described: str) -> None:
    category = address_category(address)
    if category is not None:
        raise UnsafeWebhookUrl(
            f"webhook_url refused: {described}, which is not a public address ({category})",
            reason="address", address=str(address), category=category)


def address_category(address: IPAddress) -> str | None:
    """Why `address` is not a public destination (e.g. "loopback"), or None if it is.

    Explicit checks first, for a message that says what the address is;
    `is_global` has the last word for whatever they do not name.
    """
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id:
        address = ipaddress.IPv6Address(str(address).split("%", 1)[0])
    if address in _METADATA:
        return "cloud metadata endpoint"
    if isinstance(address, ipaddress.IPv4Address):
        return _v4_category(address)
    return _v6_category(address)


def _v4_category(a: ipaddress.IPv4Address) -> str | None:
    if a.is_unspecified:
        return "unspecified"
    if a in _V4_THIS_NETWORK:
        return "unspecified, 'this network' 0.0.0.0/8"
    if a.is_loopback:
        return "loopback"
    if a.is_link_local:
        return "link-local"
    if a in _V4_SHARED:
        return "shared address space, CGNAT 100.64.0.0/10"
    for network in _V4_PRIVATE:
        if a in network:
            return f"private, {network}"
    if a in _V4_BENCHMARKING:
        return "benchmarking, 198.18.0.0/15"
    if a.is_multicast:
        return "multicast"
    if a == _V4_BROADCAST:
        return "reserved, broadcast"
    if a.is_reserved:
        return "reserved"
    if a.is_private:
        return "reserved, special-purpose: documentation or protocol assignments"
    if not a.is_global:
        return "not globally routable"
    return None


def _v6_category(a: ipaddress.IPv6Address) -> str | None:
    if a.is_unspecified:
        return "unspecified"
    if a.is_loopback:
        return "loopback"
    # IPv4 inside IPv6: judged by the IPv4 address (what a connect may reach).
    # Mapped and compatible forms are refused even around a public address:
    # a real host publishes its IPv4 address as such, and what `is_global`
    # says of them has changed between Python releases.
    if a.ipv4_mapped is not None:
        return _embedding("IPv4-mapped IPv6", a.ipv4_mapped, always=True)
    if a in _V6_COMPATIBLE:
        return _embedding("IPv4-compatible IPv6", ipaddress.IPv4Address(int(a)), always=True)
    if a in _V6_NAT64:
        # A public IPv4 behind the well-known NAT64 prefix is how IPv6-only
        # networks reach IPv4 hosts: its IPv4 address decides.
        return _embedding("NAT64 64:ff9b::/96", ipaddress.IPv4Address(int(a) & 0xFFFFFFFF))
    if a.sixtofour is not None:
        category = _embedding("6to4 2002::/16", a.sixtofour)
        if category is not None:
            return category
    if a.is_link_local:
        return "link-local"
    if a.is_site_local:
        return "site-local, deprecated fec0::/10"
    if a in _V6_UNIQUE_LOCAL:
        return "private, unique local fc00::/7"
    if a.is_multicast:
        return "multicast"
    if a.is_reserved:
        return "reserved"
    if a.is_private:
        return "reserved, special-purpose: documentation or protocol assignments"
    if not a.is_global:
        return "not globally routable"
    return None


def _embedding(kind: str, v4: ipaddress.IPv4Address, *, always: bool = False) -> str | None:
    category = address_category(v4)
    if category is not None:
        return f"{kind} embedding {v4}, {category}"
    if always:
        return f"{kind} embedding {v4}; use the IPv4 address itself"
    return None
