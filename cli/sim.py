"""`editq sim`: run a provider simulator on its own, for manual tries, demos and benchmarks."""

from __future__ import annotations

from collections.abc import Callable

import click

from simulators.common import Latency, parse_fault_rates


def _check(parse: Callable[[str], object]) -> Callable[[click.Context, click.Parameter, str], str]:
    """Refuse a bad spec before anything starts, with the parser's own explanation."""
    def callback(ctx: click.Context, param: click.Parameter, value: str) -> str:
        try:
            parse(value)
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
        return value
    return callback


@click.group()
def sim() -> None:
    """Provider simulators (loopback only; not the real providers)."""


@sim.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
@click.option("--latency", default="1", show_default=True, callback=_check(Latency.parse),
              help="task duration in seconds: '5', '2-8' (uniform) or 'normal:5,1'")
@click.option("--faults", default="", callback=_check(parse_fault_rates),
              help="random faults, e.g. '500=0.1,429=0.05@poll,task-5003=0.02,hang=0.02@submit'")
@click.option("--api-key", default=None, envvar="EDITQ_SIM_API_KEY",
              help="the only key accepted (default: any non-empty bearer key)")
@click.option("--seed", default=None, type=int, help="seed for latencies and random faults")
@click.option("--sync-timeout", default=30.0, show_default=True, type=float,
              help="seconds a sync-mode submit waits before answering 'processing' (5004)")
@click.option("--rate-limit", default=None, type=int, help="submits per minute before 429")
@click.option("--webhook-secret", default=None, help="webhook signing secret (default: random)")
@click.option("--public-url", default=None,
              help="base of the URLs handed out (default: the Host the client called)")
def wavespeed(host: str, port: int, latency: str, faults: str, api_key: str | None,
              seed: int | None, sync_timeout: float, rate_limit: int | None,
              webhook_secret: str | None, public_url: str | None) -> None:
    """Serve a simulator of WaveSpeed's REST API v3 until Ctrl-C."""
    from simulators.wavespeed import WaveSpeedSimConfig, run

    config = WaveSpeedSimConfig(api_key=api_key, latency=latency, faults=faults, seed=seed,
                                sync_timeout=sync_timeout, rate_limit_per_minute=rate_limit,
                                webhook_secret=webhook_secret, public_url=public_url)
    click.echo(f"WaveSpeed simulator on http://{host}:{port} (latency {latency}, "
               f"faults {faults or 'none'}, admin at /_sim/stats)", err=True)
    run(config, host=host, port=port)


def _stability_faults(spec: str) -> object:
    from simulators.stability_state import parse_faults

    return parse_faults(spec)


@sim.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8200, show_default=True, type=int)
@click.option("--latency", default="1", show_default=True, callback=_check(Latency.parse),
              help="generation time in seconds: '5', '2-8' (uniform) or 'normal:5,1'")
@click.option("--faults", default="", callback=_check(_stability_faults),
              help="random faults, e.g. '500=0.1,429=0.05@result,moderation=0.02,"
                   "filtered=0.02,expired=0.01@result,hang=0.01@submit'")
@click.option("--api-key", default=None, envvar="EDITQ_SIM_API_KEY",
              help="the only key accepted (default: any non-empty bearer key)")
@click.option("--seed", default=None, type=int, help="seed for latencies, seeds and faults")
@click.option("--rate-limit", default=150, show_default=True, type=click.IntRange(min=1),
              help="requests allowed in any --rate-window seconds")
@click.option("--rate-window", default=10.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="seconds")
@click.option("--lockout", default=60.0, show_default=True, type=click.FloatRange(min=0),
              help="seconds every request is refused after the limit is exceeded")
@click.option("--result-ttl", default=86400.0, show_default=True, type=click.FloatRange(min=0),
              help="seconds an async result stays readable after it completes")
def stability(host: str, port: int, latency: str, faults: str, api_key: str | None,
              seed: int | None, rate_limit: int, rate_window: float, lockout: float,
              result_ttl: float) -> None:
    """Serve a simulator of Stability AI's REST v2beta edit and upscale API until Ctrl-C."""
    from simulators.stability import StabilitySimConfig, run

    config = StabilitySimConfig(api_key=api_key, latency=latency, faults=faults, seed=seed,
                                rate_limit=rate_limit, rate_window=rate_window,
                                lockout=lockout, result_ttl=result_ttl)
    click.echo(f"Stability simulator on http://{host}:{port} (latency {latency}, "
               f"faults {faults or 'none'}, {rate_limit} requests per {rate_window:g} s, "
               "admin at /_sim/stats)", err=True)
    run(config, host=host, port=port)


@sim.command("image-host")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8300, show_default=True, type=int)
def image_host(host: str, port: int) -> None:
    """Serve images (and broken answers) for image URLs until Ctrl-C: /img/NAME.png."""
    from simulators.image_host import run

    click.echo(f"image host on http://{host}:{port} (/img/NAME.png, /_sim/stats)", err=True)
    run(host, port)


if __name__ == "__main__":
    sim()
