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
    assert r.mimetype == "application/json"
    assert r.get_json() == {"status": "ok"}


def test_page_names_app_environment_and_version(client, monkeypatch):
    monkeypatch.setenv("APP_ENV", "green")
    monkeypatch.setenv("APP_VERSION", "staging-1a2b3c4")
    r = client.get("/")
    assert r.status_code == 200
    assert r.mimetype == "text/html"
    body = r.get_data(as_text=True)
    assert "<h1>smallcase app</h1>" in body
    assert "<strong>green</strong>" in body
    assert "<code>staging-1a2b3c4</code>" in body


def test_page_defaults_to_local_and_dev(client):
    body = client.get("/").get_data(as_text=True)
    assert "<strong>local</strong>" in body
    assert "<code>dev</code>" in body


def test_environment_and_version_are_escaped(client, monkeypatch):
    monkeypatch.setenv("APP_ENV", '<script>alert("x")</script>')
    monkeypatch.setenv("APP_VERSION", "1&2")
    body = client.get("/").get_data(as_text=True)
    assert "<script>" not in body
    assert "<strong>&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</strong>" in body
    assert "<code>1&amp;2</code>" in body


def test_unknown_paths_are_json_404s(client):
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.mimetype == "application/json"
    assert r.get_json() == {"error": "not found"}


def test_other_errors_are_json_too(client):
    r = client.post("/healthz")
    assert r.status_code == 405
    assert r.get_json() == {"error": "method not allowed"}
