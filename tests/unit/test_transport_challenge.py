import pytest

from layerfill.remote.transport.challenge import find_challenge, parse_www_authenticate, pull_scope_for_path

pytestmark = pytest.mark.unit


def test_docker_hub_challenge() -> None:
    header = (
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/alpine:pull"'
    )
    [challenge] = parse_www_authenticate(header)
    assert challenge.scheme == "bearer"
    assert challenge.params == {
        "realm": "https://auth.docker.io/token",
        "service": "registry.docker.io",
        "scope": "repository:library/alpine:pull",
    }
    assert challenge.scopes == ("repository:library/alpine:pull",)


def test_commas_and_escapes_inside_quotes_and_spaces_around_equals() -> None:
    header = r'Bearer realm = "https://r/token" , scope="repository:a:pull,push repository:b:pull", x="q\"uote"'
    [challenge] = parse_www_authenticate(header)
    assert challenge.params["realm"] == "https://r/token"
    assert challenge.scopes == ("repository:a:pull,push", "repository:b:pull")
    assert challenge.params["x"] == 'q"uote'


def test_several_challenges_in_one_header_and_case_insensitivity() -> None:
    header = 'Basic realm="fake", BEARER Realm=https://r/token,Service=svc'
    challenges = parse_www_authenticate(header)
    assert [c.scheme for c in challenges] == ["basic", "bearer"]
    assert challenges[0].params == {"realm": "fake"}
    assert challenges[1].params == {"realm": "https://r/token", "service": "svc"}
    assert find_challenge(header, "Bearer") == challenges[1]
    assert find_challenge(header, "negotiate") is None


@pytest.mark.parametrize("header", [None, "", "   ", ",,,"])
def test_empty_headers_have_no_challenge(header: str | None) -> None:
    assert parse_www_authenticate(header) == []


def test_unterminated_quote_keeps_what_is_there() -> None:
    [challenge] = parse_www_authenticate('Bearer realm="https://r/tok')
    assert challenge.params["realm"] == "https://r/tok"


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/v2/library/alpine/manifests/latest", "repository:library/alpine:pull"),
        ("/v2/a/b/c/blobs/sha256:00", "repository:a/b/c:pull"),
        ("/artifactory/api/docker/v2/team/app/tags/list", "repository:team/app:pull"),
        ("/v2/", None),
        ("/token", None),
    ],
)
def test_pull_scope_for_path(path: str, scope: str | None) -> None:
    assert pull_scope_for_path(path) == scope
