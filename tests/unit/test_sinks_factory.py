from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from layerfill.config.routes import Route
from layerfill.config.settings import S3Settings
from layerfill.sinks.distribution import DistributionSink
from layerfill.sinks.factory import SinkFactory
from layerfill.sinks.registry import RegistrySink

pytestmark = pytest.mark.unit

S3 = S3Settings(access_key="k", secret_key=SecretStr("s"), bucket="registry", root_directory="/proxy")


def route(**kw: object) -> Route:
    return Route(registry="cache.local:5000", upstream_url="https://registry-1.docker.io", **kw)


@pytest.fixture
def factory() -> Iterator[SinkFactory]:
    f = SinkFactory()
    yield f
    f.close()


def test_one_distribution_sink_per_s3_settings(factory: SinkFactory) -> None:
    first = factory.make(route(), S3)
    assert isinstance(first, DistributionSink)
    assert (first.bucket, first.root) == ("registry", "/proxy")
    assert factory.make(route(repository_prefix="other"), S3.model_copy()) is first
    other = factory.make(route(), S3.model_copy(update={"root_directory": "/"}))
    assert other is not first
    assert factory.make(route(), S3.model_copy(update={"secret_key": SecretStr("t")})) is not first


def test_every_distribution_sink_shares_the_process_budget() -> None:
    f = SinkFactory(buffer_bytes=48 * 2**20)
    try:
        first = f.make(route(), S3)
        other = f.make(route(), S3.model_copy(update={"root_directory": "/"}))
        assert isinstance(first, DistributionSink) and isinstance(other, DistributionSink)
        assert first is not other
        assert first.budget is other.budget is f.budget
        assert f.budget.capacity == 48 * 2**20
    finally:
        f.close()


def test_buffer_bytes_setting_default_matches_the_factory() -> None:
    from layerfill.config.settings import FetcherSettings
    from layerfill.sinks.distribution import DEFAULT_BUFFER_BYTES

    assert FetcherSettings().buffer_bytes == DEFAULT_BUFFER_BYTES
    with pytest.raises(ValueError):
        FetcherSettings(buffer_bytes=1024)


def test_registry_sink_per_proxy_login(factory: SinkFactory) -> None:
    r = route(sink="registry", proxy_url="https://quay.local", proxy_username="u", proxy_password="p")
    sink = factory.make(r, S3)
    assert isinstance(sink, RegistrySink)
    assert factory.make(r.model_copy(), S3) is sink
    assert factory.make(r.model_copy(update={"proxy_username": "v"}), S3) is not sink


def test_registry_sink_needs_a_proxy_url(factory: SinkFactory) -> None:
    with pytest.raises(ValueError, match="proxy_url"):
        factory.make(route(sink="registry"), S3)


def test_registry_sink_needs_username_and_password_together() -> None:
    with pytest.raises(ValueError, match="proxy_password"):
        RegistrySink("https://quay.local", username="u")


def test_distribution_sink_checks_its_settings() -> None:
    with pytest.raises(ValueError, match="part_size"):
        DistributionSink(S3, part_size=1024)
    with pytest.raises(ValueError, match="root_directory"):
        DistributionSink(S3.model_copy(update={"root_directory": "/a/../b"}))
    with pytest.raises(ValueError, match=r"s3\.endpoint"):
        DistributionSink(S3.model_copy(update={"endpoint": "127.0.0.1:9000"}))
