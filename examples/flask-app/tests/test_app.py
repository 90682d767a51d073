import pytest

from app import create_app


@pytest.fixture()
def client(monkeypatch):
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.delenv("APP_VERSION", raising=False)
    return create_app().test_client()


def test_health_endpoint_says_ok(client):
    r = client.get("/healthz")
    assert r.status_code == 200
    assert r.get_json() == {"status": "ok"}


def test_page_names_environment_and_version(client, monkeypatch):
    monkeypatch.setenv("APP_ENV", "green")
    monkeypatch.setenv("APP_VERSION", "staging-1a2b3c4")
    r = client.get("/")
    assert r.status_code == 200
    assert "<strong>green</strong>" in r.get_data(as_text=True)
    assert "staging-1a2b3c4" in r.get_data(as_text=True)


def test_page_defaults_to_local(client):
    assert "<strong>local</strong>" in client.get("/").get_data(as_text=True)


def test_environment_is_escaped(client, monkeypatch):
    monkeypatch.setenv("APP_ENV", "<script>x</script>")
    body = client.get("/").get_data(as_text=True)
    assert "<script>" not in body
    assert "&lt;script&gt;" in body


def test_unknown_paths_are_json_404s(client):
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.get_json() == {"error": "not found"}
