"""Provider output downloads go through the webhooks' address guard, hop by hop, against
a real HTTP server on loopback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shared.errors import ProviderError
from shared.fetching import MAX_REDIRECTS
from shared.providers.registry import Registry
from shared.providers.router import build_provider
from shared.providers.wavespeed import WaveSpeedEditProvider
from shared.providers.wavespeed_client import WaveSpeedClient
from tests.conftest import make_settings
from tests.helpers import image_bytes

pytestmark = pytest.mark.timeout(30)
PNG = image_bytes((20, 10))


class Origin:
    """Answers redirects and an image; remembers every path asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.release = threading.Event()
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                origin.asked.append(self.path)
                if self.path == "/hang":
                    origin.release.wait(20)  # headers never come while the test runs
                    return
                target = {"/to-loopback": f"http://127.0.0.1:{origin.port}/secret",
                          "/to-metadata": "http://169.254.169.254/latest/meta-data/",
                          "/to-image": f"http://localhost:{origin.port}/image.png",
                          "/loop": "/loop"}.get(self.path)
                if target is not None:
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(PNG)))
                self.end_headers()
                self.wfile.write(PNG)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def origin() -> Iterator[Origin]:
    server = Origin()
    yield server
    server.release.set()
    server.server.shutdown()


def client_for(origin: Origin) -> WaveSpeedClient:
    # WaveSpeed's own host (here "localhost", the base URL's) is trusted; 127.0.0.1 is not.
    return WaveSpeedClient(f"http://localhost:{origin.port}", "key")


def test_a_redirect_from_a_trusted_host_to_a_loopback_address_is_not_followed(
        origin: Origin) -> None:
    with pytest.raises(ProviderError) as info:
        client_for(origin).download(f"http://localhost:{origin.port}/to-loopback", 10**6)
    assert info.value.code == "provider_bad_output" and info.value.extra["billed"]
    assert "loopback" in info.value.message
    assert "/secret" not in origin.asked


def test_a_redirect_to_the_metadata_address_is_refused_without_connecting(
        origin: Origin) -> None:
    with pytest.raises(ProviderError) as info:
        client_for(origin).download(f"http://localhost:{origin.port}/to-metadata", 10**6)
    assert "169.254.169.254" in info.value.message


def test_an_output_url_on_a_private_address_is_refused_outright(origin: Origin) -> None:
    with pytest.raises(ProviderError):
        client_for(origin).download(f"http://127.0.0.1:{origin.port}/image.png", 10**6)
    assert origin.asked == []


def test_a_redirect_within_trusted_hosts_is_followed_and_the_cap_still_holds(
        origin: Origin) -> None:
    client = client_for(origin)
    assert client.download(f"http://localhost:{origin.port}/to-image", 10**6) == PNG
    with pytest.raises(ProviderError) as info:
        client.download(f"http://localhost:{origin.port}/to-image", len(PNG) - 1)
    assert "over" in info.value.message


def test_redirects_end(origin: Origin) -> None:
    with pytest.raises(ProviderError) as info:
        client_for(origin).download(f"http://localhost:{origin.port}/loop", 10**6)
    assert f"more than {MAX_REDIRECTS} redirects" in info.value.message
    assert origin.asked.count("/loop") == MAX_REDIRECTS + 1


def test_a_hung_download_is_given_up_after_the_configured_timeout(origin: Origin) -> None:
    # given the WaveSpeed provider built from settings with a 0.5 s download timeout
    settings = make_settings(database_url="sqlite://", wavespeed_api_key="key",
                             wavespeed_base_url=f"http://localhost:{origin.port}",
                             provider_download_timeout_seconds=0.5)
    provider = build_provider("wavespeed", settings, Registry())
    assert isinstance(provider, WaveSpeedEditProvider)
    # when an output URL never answers
    started = time.monotonic()
    with pytest.raises(ProviderError) as info:
        provider.client.download(f"http://localhost:{origin.port}/hang", 10**6)
    # then the download is given up in about that time, as a retryable provider error
    assert time.monotonic() - started < 5
    assert info.value.retryable
