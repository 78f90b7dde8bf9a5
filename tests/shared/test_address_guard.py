"""The SSRF guard on webhook URLs: what it refuses, what it lets through, how it pins.

No test sends a packet: literal hosts never reach a resolver (a resolver that
fails the test stands in), names resolve through an injected resolver or a
monkeypatched `socket.getaddrinfo`, and only `localhost` goes to the system
resolver (answered from /etc/hosts, on loopback).
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import dataclass, field

import httpx
import pytest

from shared.address_guard import UnsafeWebhookUrl, check_webhook_url, pinned_request
from shared.errors import InvalidInput

pytestmark = pytest.mark.timeout(30)

CODE = "webhook_url_not_allowed"
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
SYSTEM = "system"  # resolve with the real system resolver (only ever for localhost)


def never_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host}:{port} should not have been resolved")


@dataclass
class FakeResolver:
    """Answers from a table and remembers the questions."""

    answers: dict[str, list[str]]
    calls: list[tuple[str, int]] = field(default_factory=list)

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[host]


def refused(url: str, **kwargs: object) -> UnsafeWebhookUrl:
    with pytest.raises(UnsafeWebhookUrl) as caught:
        check_webhook_url(url, **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == CODE
    return caught.value


# (id, url, what a name resolves to: None for a literal, SYSTEM, or answers, category words)
REFUSED = [
    ("decimal", "http://2130706433/", None, ["loopback"]),
    ("octal", "http://0177.0.0.1/", None, ["loopback"]),
    ("hex", "http://0x7f000001/", None, ["loopback"]),
    ("hex-dotted", "http://0x7f.0.0.1/", None, ["loopback"]),
    ("hex-short", "http://0X7F.1/", None, ["loopback"]),
    ("octal-short", "http://0177.1/", None, ["loopback"]),
    ("short-127.1", "http://127.1/", None, ["loopback"]),
    ("dotted-127.0.0.1", "http://127.0.0.1:8080/hook", None, ["loopback"]),
    ("trailing-dot", "http://127.0.0.1./", None, ["loopback"]),
    ("fullwidth-idna", "http://\uff11\uff12\uff17\u3002\uff10\u3002\uff10\u3002\uff11/",
     None, ["loopback"]),
    ("localhost", "http://localhost:8000/hook", SYSTEM, ["loopback"]),
    ("localhost-upper-dot", "https://LOCALHOST./hook", SYSTEM, ["loopback"]),
    ("ipv6-loopback", "http://[::1]/", None, ["loopback"]),
    ("ipv4-mapped-dotted", "http://[::ffff:127.0.0.1]/", None, ["IPv4-mapped", "loopback"]),
    ("ipv4-mapped-hex", "http://[0:0:0:0:0:ffff:7f00:1]/", None, ["IPv4-mapped", "loopback"]),
    ("ipv4-mapped-metadata", "http://[::ffff:169.254.169.254]/", None,
     ["IPv4-mapped", "metadata"]),
    ("ipv4-compatible", "http://[::127.0.0.1]/", None, ["IPv4-compatible", "loopback"]),
    ("6to4-loopback", "http://[2002:7f00:1::]/", None, ["6to4", "loopback"]),
    ("nat64-private", "http://[64:ff9b::10.0.0.1]/", None, ["NAT64", "private"]),
    ("link-local-v4", "http://169.254.1.1/", None, ["link-local"]),
    ("link-local-v6", "http://[fe80::1]/", None, ["link-local"]),
    ("unspecified-v4", "http://0.0.0.0/", None, ["unspecified"]),
    ("unspecified-zero", "http://0/", None, ["unspecified"]),
    ("unspecified-v6", "http://[::]/", None, ["unspecified"]),
    ("metadata-aws", "http://169.254.169.254/latest/meta-data/", None, ["metadata"]),
    ("metadata-aws-v6", "http://[fd00:ec2::254]/", None, ["metadata"]),
    ("metadata-alibaba", "http://100.100.100.200/", None, ["metadata"]),
    ("private-10", "http://10.1.2.3/", None, ["private", "10.0.0.0/8"]),
    ("private-172.16", "http://172.16.5.4/", None, ["private", "172.16.0.0/12"]),
    ("private-172.31", "http://172.31.255.255/", None, ["private", "172.16.0.0/12"]),
    ("private-192.168", "http://192.168.1.1/", None, ["private", "192.168.0.0/16"]),
    ("unique-local-fc00", "http://[fc00::1]/", None, ["private", "unique local"]),
    ("unique-local-fd", "http://[fd12:3456::1]/", None, ["private", "unique local"]),
    ("cgnat", "http://100.64.0.1/", None, ["shared address space", "CGNAT"]),
    ("benchmarking", "http://198.18.0.1/", None, ["benchmarking"]),
    ("multicast-v4", "http://224.0.0.1/", None, ["multicast"]),
    ("multicast-v6", "http://[ff02::1]/", None, ["multicast"]),
    ("site-local-v6", "http://[fec0::1]/", None, ["site-local"]),
    ("reserved-240", "http://240.0.0.1/", None, ["reserved"]),
    ("broadcast", "http://255.255.255.255/", None, ["reserved", "broadcast"]),
    ("documentation", "http://192.0.2.10/", None, ["reserved"]),
    ("rebind-to-loopback", "https://rebind.example.test/hook", ["127.0.0.1"], ["loopback"]),
    ("public-and-private", "https://mixed.example.test/hook", [PUBLIC_V4, "10.0.0.5"],
     ["private", "10.0.0.5"]),
    ("resolves-to-metadata-v6", "https://aaaa.example.test/", [PUBLIC_V6, "fd00:ec2::254"],
     ["metadata"]),
    ("resolves-to-mapped", "https://mapped.example.test/", ["::ffff:10.0.0.1"],
     ["IPv4-mapped", "private"]),
]


@pytest.mark.parametrize(("url", "answers", "words"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_non_public_destinations_are_refused_naming_the_category(
        url: str, answers: list[str] | str | None, words: list[str]) -> None:
    # given a URL whose host is, or resolves to, an address that is not public
    if answers is None:
        resolve = never_resolve  # literals are read here, never handed to a resolver
    elif answers == SYSTEM:
        resolve = None
    else:
        assert isinstance(answers, list)
        resolve = FakeResolver({url.split("/")[2]: answers})
    # when it is checked
    error = refused(url, resolve=resolve)
    # then it is refused with the stable code, a 422, and the message says why
    assert error.status == 422 and isinstance(error, InvalidInput)
    assert "not a public address" in error.message
    for word in words:
        assert word in error.message
    assert error.extra["field"] == "webhook_url"


def test_at_least_twenty_refused_forms_are_covered() -> None:
    # given the table above / then it is as wide as the issue asks
    assert len(REFUSED) >= 20


@pytest.mark.parametrize("url", [
    "ftp://example.test/hook",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "javascript:alert(1)",
    "data:text/plain,hello",
    "ws://example.test/hook",
    "example.test/hook",
    "//example.test/hook",
    "localhost:8000/hook",
], ids=["ftp", "file", "gopher", "javascript", "data", "websocket", "no-scheme",
        "scheme-relative", "host-port-no-scheme"])
def test_schemes_other_than_http_and_https_are_refused(url: str) -> None:
    # given a URL that is not http(s) / when checked / then refused, naming the scheme rule
    error = refused(url, resolve=never_resolve)
    assert "scheme" in error.message and "http" in error.message


@pytest.mark.parametrize("url", [
    "http://alice:s3cret@example.test/hook",
    "https://alice@example.test/hook",
    "https://:s3cret@example.test/hook",
    "http://alice:s3cret@127.0.0.1/hook",
    "alice:s3cret@example.test/hook",
], ids=["user-password", "user-only", "password-only", "before-loopback", "no-scheme"])
def test_credentials_are_refused_and_never_echoed(url: str) -> None:
    # given a URL carrying user information / when checked
    error = refused(url, resolve=never_resolve)
    # then it is refused, and neither the user nor the password appears anywhere
    assert "alice" not in error.message and "s3cret" not in error.message
    assert "alice" not in str(error.extra) and "s3cret" not in str(error.extra)


def test_a_url_with_credentials_names_the_reason() -> None:
    # given user information in an http URL / when checked / then the message says so
    assert "credentials" in refused("http://alice:s3cret@example.test/").message


@pytest.mark.parametrize(("url", "words"), [
    ("http://example.test:0/", "port 0"),
    ("http://example.test:65536/", "port 65536"),
    ("http://example.test:99999/", "port 99999"),
    ("http://example.test:-1/", "not a number"),
    ("http://example.test:80a/", "not a number"),
    ("http://[2606:4700:4700::1111]:70000/", "port 70000"),
], ids=["zero", "65536", "99999", "negative", "letters", "ipv6-too-big"])
def test_ports_outside_1_to_65535_are_refused(url: str, words: str) -> None:
    # given a bad port / when checked / then refused before any resolution
    assert words in refused(url, resolve=never_resolve).message


@pytest.mark.parametrize("url", [
    "http:///hook", "https://", "http://:8080/hook", "http:example.test/hook",
], ids=["empty-authority", "nothing", "port-only", "no-slashes"])
def test_a_url_without_a_host_is_refused(url: str) -> None:
    # given a URL with no host / when checked / then refused
    assert "no host" in refused(url, resolve=never_resolve).message


@pytest.mark.parametrize(("url", "words"), [
    ("http://example.test/" + "a" * 2048, "over 2048"),
    ("http://exa mple.test/", "whitespace"),
    ("http://example.test\\@127.0.0.1/", "backslash"),
    ("http://[::1/", "not a valid URL"),
    ("http://::1/", "brackets"),
    ("http://[fe80::1%25eth0]/", "zone"),
    ("http://[127.0.0.1]/", "not a valid (IPv6 address|URL)"),  # urlsplit's check varies
    ("http://1.2.3.256/", "neither a valid IPv4"),
    ("http://08.0.0.1/", "neither a valid IPv4"),
    ("http://ex%61mple.test/", "characters not allowed"),
], ids=["too-long", "space", "backslash", "unclosed-bracket", "bare-ipv6", "zone-id",
        "ipv4-in-brackets", "octet-256", "bad-octal", "percent-encoded-host"])
def test_malformed_urls_are_refused(url: str, words: str) -> None:
    # given a URL parsers might read differently / when checked / then refused outright
    assert re.search(words, refused(url, resolve=never_resolve).message)


def test_a_name_that_does_not_resolve_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    # given the system resolver knows no such name
    def fail(*args: object, **kwargs: object) -> list[object]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    monkeypatch.setattr(socket, "getaddrinfo", fail)
    # when a URL on it is checked / then refused, saying so
    assert "does not resolve" in refused("https://nowhere.example.test/hook").message


def test_a_hanging_resolver_is_given_up_on_and_the_name_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import address_guard

    # given a system resolver that hangs, and a lookup deadline of 0.3 s
    release, answered = threading.Event(), threading.Event()

    def hang(*args: object, **kwargs: object) -> list[object]:
        release.wait(30)
        answered.set()
        return []
    monkeypatch.setattr(socket, "getaddrinfo", hang)
    monkeypatch.setattr(address_guard, "RESOLVE_TIMEOUT_SECONDS", 0.3)
    try:
        # when a URL on a name is checked
        error = refused("https://slow.example.test/hook")
        # then the check gives up after the deadline, while the resolver still hangs
        assert not answered.is_set()
        assert error.extra["reason"] == "unresolvable" and "does not resolve" in error.message
    finally:
        release.set()


def test_a_resolver_answering_nothing_or_garbage_is_refused() -> None:
    # given resolvers that answer no address, or something that is not one
    empty = FakeResolver({"empty.example.test": []})
    garbage = FakeResolver({"odd.example.test": ["not-an-ip"]})
    # when checked / then refused
    assert "no address" in refused("https://empty.example.test/", resolve=empty).message
    assert "not an IP address" in refused("https://odd.example.test/", resolve=garbage).message


@pytest.mark.parametrize(("url", "expected"), [
    ("http://8.8.8.8/hook", ["8.8.8.8"]),
    ("https://[2606:4700:4700::1111]:8443/hook", ["2606:4700:4700::1111"]),
    ("https://[64:ff9b::8.8.8.8]/hook", ["64:ff9b::808:808"]),
    ("https://[2002:808:808::1]/hook", ["2002:808:808::1"]),
], ids=["public-v4", "public-v6", "nat64-of-public", "6to4-of-public"])
def test_public_literals_are_accepted_without_resolving(url: str, expected: list[str]) -> None:
    # given a literal public address / when checked / then it is the answer, unresolved
    assert check_webhook_url(url, resolve=never_resolve) == expected


def test_a_name_resolving_to_public_addresses_is_accepted_with_them() -> None:
    # given a resolver answering public addresses (one of them twice)
    resolver = FakeResolver({"hooks.example.test": [PUBLIC_V4, PUBLIC_V6, PUBLIC_V4]})
    # when a URL on the name is checked
    addresses = check_webhook_url("https://Hooks.Example.Test./events", resolve=resolver)
    # then all of them come back, once each, and the name was asked with the port to use
    assert addresses == [PUBLIC_V4, PUBLIC_V6]
    assert resolver.calls == [("hooks.example.test", 443)]
    check_webhook_url("http://hooks.example.test:8080/", resolve=resolver)
    assert resolver.calls[-1] == ("hooks.example.test", 8080)


def test_the_default_resolver_is_getaddrinfo_for_stream_sockets(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # given the system resolver answering an IPv4 and an IPv6 address
    seen: list[tuple[object, ...]] = []

    def fake(host: str, port: int, *args: object, **kwargs: object) -> list[object]:
        seen.append((host, port, kwargs.get("type")))
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (PUBLIC_V4, port)),
                (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (PUBLIC_V6, port, 0, 0))]
    monkeypatch.setattr(socket, "getaddrinfo", fake)
    # when a URL is checked without a resolver of its own
    addresses = check_webhook_url("http://hooks.example.test/events")
    # then getaddrinfo was asked for TCP on port 80, and both addresses are returned
    assert seen == [("hooks.example.test", 80, socket.SOCK_STREAM)]
    assert addresses == [PUBLIC_V4, PUBLIC_V6]


def test_an_ipv4_mapped_public_address_is_refused_too() -> None:
    # given an IPv4-mapped spelling of a public address
    error = refused("http://[::ffff:8.8.8.8]/", resolve=never_resolve)
    # then it is refused, pointing at the plain IPv4 form
    assert "IPv4-mapped" in error.message and "8.8.8.8" in error.message


@pytest.mark.parametrize(("url", "allowed"), [
    ("http://localhost:8000/hook", {"localhost"}),
    ("http://LOCALHOST.:8000/hook", frozenset({"localhost"})),
    ("http://127.0.0.1:8000/hook", {"127.0.0.1"}),
    ("http://[::1]:8000/hook", {"::1"}),
    ("http://[::1]:8000/hook", {"[::1]"}),
], ids=["localhost", "localhost-upper-dot", "loopback-v4", "loopback-v6", "bracketed-entry"])
def test_the_allow_list_lets_local_hosts_through_unresolved(
        url: str, allowed: set[str] | frozenset[str]) -> None:
    # given a host on EDITQ_WEBHOOK_ALLOWED_HOSTS / when checked
    # then it is accepted as is: [] means "connect to the URL itself"
    assert check_webhook_url(url, allowed, resolve=never_resolve) == []


def test_the_allow_list_does_not_excuse_scheme_credentials_or_other_hosts() -> None:
    # given localhost on the allow list
    allowed = {"localhost"}
    # when other rules are broken, or another local host is used / then still refused
    refused("ftp://localhost/hook", allowed_hosts=allowed, resolve=never_resolve)
    refused("http://user:pw@localhost/hook", allowed_hosts=allowed, resolve=never_resolve)
    refused("http://localhost:0/hook", allowed_hosts=allowed, resolve=never_resolve)
    assert "loopback" in refused("http://127.0.0.1/", allowed_hosts=allowed,
                                 resolve=never_resolve).message


@pytest.mark.parametrize(("url", "ip", "expected_url", "host", "extensions"), [
    ("http://hooks.example.test/events?x=1", PUBLIC_V4,
     f"http://{PUBLIC_V4}/events?x=1", "hooks.example.test", {}),
    ("http://hooks.example.test:8080/events", PUBLIC_V6,
     f"http://[{PUBLIC_V6}]:8080/events", "hooks.example.test:8080", {}),
    ("https://Hooks.Example.test/events", PUBLIC_V4,
     f"https://{PUBLIC_V4}/events", "hooks.example.test",
     {"sni_hostname": "hooks.example.test"}),
    ("https://hooks.example.test:8443/events", PUBLIC_V6,
     f"https://[{PUBLIC_V6}]:8443/events", "hooks.example.test:8443",
     {"sni_hostname": "hooks.example.test"}),
    ("https://hooks.example.test:443/events", PUBLIC_V4,
     f"https://{PUBLIC_V4}/events", "hooks.example.test",
     {"sni_hostname": "hooks.example.test"}),
], ids=["http-v4", "http-v6-port", "https-v4", "https-v6-port", "https-default-port"])
def test_pinned_request_connects_to_the_checked_address_under_the_original_name(
        url: str, ip: str, expected_url: str, host: str, extensions: dict[str, object]) -> None:
    # given a checked URL and one of its addresses / when pinned
    pinned, headers, ext = pinned_request(url, ip)
    # then the URL goes to the address, Host (and SNI for https) keep the name
    assert (pinned, headers, ext) == (expected_url, {"Host": host}, extensions)


def test_a_pinned_request_reaches_httpx_as_intended() -> None:
    # given a transport that records what httpx would send
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(204)
    resolver = FakeResolver({"hooks.example.test": [PUBLIC_V6]})
    addresses = check_webhook_url("https://hooks.example.test:8443/events", resolve=resolver)
    url, headers, extensions = pinned_request("https://hooks.example.test:8443/events",
                                              addresses[0])
    # when the delivery is posted through it
    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        client.post(url, content=b"{}", headers=headers, extensions=extensions)
    # then it goes to the pinned address, with one Host header and the TLS name kept
    (request,) = sent
    assert request.url.host == PUBLIC_V6 and request.url.port == 8443
    assert request.headers.get_list("host") == ["hooks.example.test:8443"]
    assert request.extensions["sni_hostname"] == "hooks.example.test"
